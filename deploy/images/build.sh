#!/usr/bin/env bash
# Builds Portico's three service images with podman, without any registry:
#   1. a minimal Debian base made with debootstrap (base.sh) and `podman import`ed,
#      cached under ${PORTICO_CACHE_DIR:-~/.cache/portico}/images keyed by the sha256
#      of base.sh, so it is made once per recipe;
#   2. the images from deploy/docker/Dockerfile, `--build-arg BINARIES=prebuilt`:
#      the runtime stage takes the binaries cargo built on the host (debug profile by
#      default, the one the test suite builds anyway; PORTICO_IMAGE_PROFILE=release
#      for release binaries) with their debug info stripped.
# Tags: localhost/portico-<service>:<version> and ghcr.io/portico/portico-<service>:<version>
# (the name deploy/k8s uses, so `podman kube play` finds them locally).
# Prints one line per image: name, size in bytes. Storage (vfs) and settings live
# under the cache directory and deploy/images/*.conf; nothing in /etc is changed.
#
#   deploy/images/build.sh            # builds (cargo build first if a binary is missing)
#   . deploy/images/env.sh; podman images   # the same storage from a shell
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=env.sh
. "$HERE/env.sh"
# shellcheck source=base.sh
. "$HERE/base.sh"

missing=()
for tool in podman debootstrap runc objcopy; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "build.sh: installing ${missing[*]} (and buildah)" >&2
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq podman buildah debootstrap runc binutils >/dev/null
fi

# --- 1. base -------------------------------------------------------------------
base_key="$(sha256sum "$HERE/base.sh" | cut -c1-16)"
base_image="localhost/portico-base:$base_key"
if ! podman image exists "$base_image"; then
  echo "build.sh: making the Debian base $base_image (debootstrap)" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "build.sh: debootstrap needs root (or run it under sudo)" >&2
    exit 1
  fi
  work="$(mktemp -d "$PORTICO_IMAGES_DIR/base.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  make_base_rootfs "$work/rootfs"
  tar -C "$work/rootfs" -c . | podman import --message "portico base $base_key" - "$base_image" >/dev/null
  rm -rf "$work"
  trap - EXIT
fi

# --- 2. binaries -----------------------------------------------------------------
profile="${PORTICO_IMAGE_PROFILE:-debug}"
target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
services=(portico-gateway portico-batch-processor portico-webhook-dispatcher)
need_build=0
for s in "${services[@]}"; do [ -x "$target_dir/$profile/$s" ] || need_build=1; done
if ((need_build)); then
  flag=(); [ "$profile" = release ] && flag=(--release)
  (cd "$ROOT" && cargo build --locked "${flag[@]}" -p portico-gateway -p portico-batch-processor -p portico-webhook-dispatcher)
fi
context="$PORTICO_IMAGES_DIR/context"
rm -rf "$context"
# Intermediate stages (the runtime-files stage holds a copy of the base) are not kept.
podman image prune -f >/dev/null
mkdir -p "$context/bin"
for s in "${services[@]}"; do
  objcopy --strip-debug "$target_dir/$profile/$s" "$context/bin/$s"
done

# --- 3. images -------------------------------------------------------------------
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)"
revision="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
if ! git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null; then revision="$revision-dirty"; fi
source_url="${PORTICO_IMAGE_SOURCE:-https://github.com/portico/portico}"
for s in "${services[@]}"; do
  podman build --quiet --isolation chroot --network host \
    -f "$ROOT/deploy/docker/Dockerfile" \
    --build-arg BASE_IMAGE="$base_image" --build-arg BINARIES=prebuilt \
    --build-arg SERVICE="$s" --build-arg VERSION="$version" \
    --build-arg REVISION="$revision" --build-arg SOURCE="$source_url" \
    --target "$s" -t "localhost/$s:$version" -t "ghcr.io/portico/$s:$version" \
    "$context" >/dev/null
  printf '%s %s\n' "localhost/$s:$version" "$(podman image inspect --format '{{.Size}}' "localhost/$s:$version")"
done
rm -rf "$context"
# Intermediate stages (the runtime-files stage holds a copy of the base) are not kept.
podman image prune -f >/dev/null
