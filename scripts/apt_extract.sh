#!/usr/bin/env bash
# Sourced by the fetch_* scripts: apt_extract PACKAGE WORK downloads PACKAGE's .deb (running
# `apt-get update` once if the package lists are stale) and unpacks it into WORK/x, without installing it.
apt_extract() {
  local package=$1 work=$2 script
  script=$(basename "${BASH_SOURCE[1]}" .sh)
  ( cd "$work" && { apt-get download "$package" >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get download "$package" >/dev/null 2>&1; }; } ) \
    || { echo "$script: 'apt-get download $package' failed (needs Debian's apt)" >&2; exit 1; }
  dpkg -x "$work"/"${package}"_*.deb "$work/x"
}
