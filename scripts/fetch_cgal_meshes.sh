#!/usr/bin/env bash
# Real meshes for tests and the mesh recipe: Debian's libcgal-demo ships CGAL's sample data
# (OFF/PLY/STL). We take a few per class into data/cgal-meshes/<class>/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/apt_extract.sh"
dest=${1:-data/cgal-meshes}
[ -f "$dest/.complete" ] && exit 0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
apt_extract libcgal-demo "$work"
tar xzf "$work/x/usr/share/doc/libcgal-dev/data.tar.gz" -C "$work" data/meshes
take() { mkdir -p "$dest/$1"; shift; for f in "$@"; do cp "$work/data/meshes/$f" "$dest/$cls/"; done; }
declare -A classes=(
  [animal]="pig.off elk.off elephant.off cow.off dino.off"
  [torus]="3torus.off double-torus-3-holes.off double-torus-example.off eight.off torus_quad.off"
  [sphere]="sphere.off geosphere.off sphere.ply sphere.stl sphere966.off"
  [mechanical]="anchor.off fandisk.off couplingdown.off handle.off cylinder.off"
)
for cls in "${!classes[@]}"; do
  # shellcheck disable=SC2086
  take "$cls" ${classes[$cls]}
done
mkdir -p "$dest/../cgal-extra"
cp "$work/data/meshes/colored_tetra.ply" "$dest/../cgal-extra/"
touch "$dest/.complete"
echo "fetch_cgal_meshes: $(find "$dest" -type f ! -name .complete | wc -l) meshes in $dest"
