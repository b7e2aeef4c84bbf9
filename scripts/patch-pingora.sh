#!/usr/bin/env bash
# Materialise pingora-proxy 0.9.1 with our changes in .patched/ (not committed): the
# published crate, unpacked from Cargo's own download, plus gateway/patches/pingora-proxy-*.diff
# applied in name order. The root Cargo.toml's [patch.crates-io] points there. Idempotent;
# re-run when a diff changes. See gateway/patches/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
diff_files=(gateway/patches/pingora-proxy-*.diff)
dest=.patched/pingora-proxy
stamp="$dest/.btp-patch"
want="$(cat "${diff_files[@]}" | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi

cache="${CARGO_HOME:-$HOME/.cargo}/registry/cache"
find_crate() { ls "$cache"/*/pingora-proxy-0.9.1.crate 2>/dev/null | head -n 1; }
crate="$(find_crate || true)"
if [ -z "$crate" ]; then
  # Let Cargo download the published crate through a throw-away manifest (the workspace
  # itself cannot resolve until the patched copy exists).
  tmp="$(mktemp -d)"
  (cd "$tmp" && cargo init -q --vcs none --name fetch-pingora-proxy \
    && printf 'pingora-proxy = { version = "=0.9.1", default-features = false }\n' >> Cargo.toml \
    && cargo fetch -q)
  rm -rf "$tmp"
  crate="$(find_crate)"
fi
rm -rf "$dest" .patched/pingora-proxy-0.9.1
mkdir -p .patched
tar -xzf "$crate" -C .patched
mv .patched/pingora-proxy-0.9.1 "$dest"
for diff_file in "${diff_files[@]}"; do
  git apply --directory="$dest" "$diff_file"
done
# The archive keeps its 2025 mtimes; make every file newer than any build of an earlier
# patch set so cargo rebuilds the crate instead of reusing a stale artifact.
find "$dest" -type f -exec touch {} +
echo "$want" > "$stamp"
echo "patch-pingora: $dest ready (${diff_files[*]##*/} applied)"
