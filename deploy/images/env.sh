# Sourced by the image scripts (and by you: `. deploy/images/env.sh; podman ps`):
# points podman at Portico's own settings (containers.conf, storage.conf) and at a
# storage directory under the cache, so nothing in /etc or /var/lib/containers is
# touched and the base image survives between runs.
PORTICO_IMAGES_HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PORTICO_IMAGES_DIR="${PORTICO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/portico}/images"
mkdir -p "$PORTICO_IMAGES_DIR"
export CONTAINERS_CONF="$PORTICO_IMAGES_HERE/containers.conf"
export CONTAINERS_STORAGE_CONF="$PORTICO_IMAGES_DIR/storage.conf"
# storage.conf with this cache's paths (podman reads graphroot/runroot from it).
sed -e "s|^graphroot = .*|graphroot = \"$PORTICO_IMAGES_DIR/storage\"|" \
    -e "s|^runroot = .*|runroot = \"$PORTICO_IMAGES_DIR/run\"|" \
    "$PORTICO_IMAGES_HERE/storage.conf" > "$CONTAINERS_STORAGE_CONF"
