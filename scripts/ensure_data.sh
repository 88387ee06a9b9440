#!/usr/bin/env bash
# Make the embedded Fashion-MNIST files available (Debian's dataset-fashion-mnist).
set -euo pipefail
dir="${STARSWEEP_FMNIST_DIR:-/usr/share/datasets/fashion-mnist}"
need=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)
have_all() { for f in "${need[@]}"; do [ -s "$dir/$f" ] || return 1; done; }
if have_all; then echo "data: Fashion-MNIST found in $dir"; exit 0; fi
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
  echo "data: installing Debian package dataset-fashion-mnist ..."
  if $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null; then
    have_all && { echo "data: Fashion-MNIST installed in $dir"; exit 0; }
  fi
fi
cat >&2 <<MSG
data: Fashion-MNIST is missing from $dir and could not be installed with apt.
  Install it:      sudo apt-get install dataset-fashion-mnist
  or put these files in a directory and export STARSWEEP_FMNIST_DIR=<dir>
  (and set data.data_dir to it in your spec): ${need[*]}
MSG
exit 1
