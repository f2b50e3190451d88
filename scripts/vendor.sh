#!/usr/bin/env bash
# Re-create static/vendor/ from package-lock.json: `npm ci` in a scratch folder, then copy the
# minified builds and their licences. Only needed to change a library's version; command 1 and CI
# serve the committed files and never need npm.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cp "$ROOT/package.json" "$ROOT/package-lock.json" "$WORK/"
(cd "$WORK" && npm ci --ignore-scripts --no-audit --no-fund)
OSD="$WORK/node_modules/openseadragon"
mkdir -p "$ROOT/static/vendor/openseadragon"
# Without its source-map comment: the map is not shipped (a browser would ask for it in vain).
grep -v '^//# sourceMappingURL=' "$OSD/build/openseadragon/openseadragon.min.js" \
  > "$ROOT/static/vendor/openseadragon/openseadragon.min.js"
cp "$OSD/LICENSE.txt" "$ROOT/static/vendor/openseadragon/LICENSE.txt"
node -e "console.log(require('$OSD/package.json').version)" > "$ROOT/static/vendor/openseadragon/VERSION"
echo "static/vendor/openseadragon: $(cat "$ROOT/static/vendor/openseadragon/VERSION")"
