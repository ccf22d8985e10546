#!/usr/bin/env bash
# CC0 HDRI environments for generator `blender` (param hdri_folder): Debian's blender-data ships
# Blender's studio-light worlds (city, courtyard, forest, interior, night, studio, sunrise, sunset; 2:1
# equirectangular OpenEXR, by Greg Zaal / HDRI Haven, license.txt: CC0). We copy them into data/hdris/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/apt_extract.sh"
dest=${1:-data/hdris}
[ -f "$dest/.complete" ] && exit 0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
apt_extract blender-data "$work"
source_dir="$work/x/usr/share/blender/datafiles/studiolights/world"
[ -n "$(ls "$source_dir"/*.exr 2>/dev/null)" ] || { echo "fetch_hdris: blender-data has no studiolights/world/*.exr" >&2; exit 1; }
mkdir -p "$dest"
cp "$source_dir"/*.exr "$source_dir"/license.txt "$dest/"
touch "$dest/.complete"
echo "fetch_hdris: $(ls "$dest"/*.exr | wc -l) HDRIs in $dest"
