#!/usr/bin/env bash
# The recipe of the local Debian base image (sourced by build.sh; its sha256 is the
# cache key of the base, so any change here rebuilds it). The base is only the
# stage the runtime files (glibc, libgcc, CA bundle) are copied from: it is never
# shipped, but smaller is faster to import and to copy into each build.
#
# make_base_rootfs DIR: debootstrap a minimal Debian 12 into DIR, then strip it.
make_base_rootfs() {
  local dir="$1"
  # Mirror: PORTICO_DEBIAN_MIRROR, else debootstrap's default.
  # shellcheck disable=SC2086
  debootstrap --variant=minbase --include=ca-certificates \
    bookworm "$dir" ${PORTICO_DEBIAN_MIRROR:-} >&2
  # Package indexes, caches, docs, man pages and locales are not needed to copy
  # libraries and certificates out of the base.
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/* "$dir"/var/cache/debconf/*-old \
    "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* \
    "$dir"/usr/share/locale/* "$dir"/usr/share/i18n/* "$dir"/var/log/* \
    "$dir"/usr/share/zoneinfo/right "$dir"/usr/share/zoneinfo/posix
}
