#!/usr/bin/env bash
# Validates the committed OpenAPI document with the tools API consumers use:
# `redocly lint` (no errors allowed) and swagger-parser's `validate()`.
# The two npm packages are installed once into a cache directory (SCOREGATE_OAS_CACHE,
# default ~/.cache/scoregate-oas), outside the repository.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
document="${1:-$root/openapi/openapi.json}"
cache="${SCOREGATE_OAS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/scoregate-oas}"

if [ ! -x "$cache/node_modules/.bin/redocly" ] || [ ! -d "$cache/node_modules/@apidevtools/swagger-parser" ]; then
    mkdir -p "$cache"
    npm install --silent --no-audit --no-fund --prefix "$cache" @redocly/cli @apidevtools/swagger-parser >&2
fi

echo "redocly lint $document" >&2
# Without a redocly.yaml the `recommended` rules apply; only errors fail the run.
REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true \
    "$cache/node_modules/.bin/redocly" lint --format=stylish "$document"

echo "swagger-parser validate $document" >&2
NODE_PATH="$cache/node_modules" node -e '
const SwaggerParser = require("@apidevtools/swagger-parser");
SwaggerParser.validate(process.argv[1])
  .then(() => console.log("swagger-parser: valid"))
  .catch((error) => { console.error("swagger-parser: " + error.message); process.exit(1); });
' "$document"
