#!/usr/bin/env bash
# Materialise the crates we carry changes to in .patched/<crate>/ (not committed): each
# published crate, unpacked from Cargo's own download, plus patches/<crate>-*.diff applied
# in name order. The root Cargo.toml's [patch.crates-io] points there. Idempotent per
# crate; re-run when a diff changes. See patches/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

# crate version (one line each; the diffs are patches/<crate>-*.diff)
crates=(
  "pingora-core 0.9.1"
  "fastwebsockets 0.10.0"
)

cache="${CARGO_HOME:-$HOME/.cargo}/registry/cache"

# Prints the path of the published .crate archive, downloading it first if needed.
crate_archive() { # crate version
  local found tmp
  found="$(ls "$cache"/*/"$1-$2.crate" 2>/dev/null | head -n 1 || true)"
  if [ -z "$found" ]; then
    # Let Cargo download it through a throw-away manifest (the workspace itself cannot
    # resolve until every patched copy exists).
    tmp="$(mktemp -d)"
    (cd "$tmp" && cargo init -q --vcs none --name "fetch-$1" \
      && printf '%s = { version = "=%s", default-features = false }\n' "$1" "$2" >> Cargo.toml \
      && cargo fetch -q)
    rm -rf "$tmp"
    found="$(ls "$cache"/*/"$1-$2.crate" | head -n 1)"
  fi
  echo "$found"
}

for entry in "${crates[@]}"; do
  read -r name version <<<"$entry"
  diff_files=(patches/"$name"-*.diff)
  dest=".patched/$name"
  stamp="$dest/.btp-patch"
  want="$(printf '%s\n' "$version" | cat - "${diff_files[@]}" | sha256sum | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then continue; fi

  archive="$(crate_archive "$name" "$version")"
  rm -rf "$dest" ".patched/$name-$version"
  mkdir -p .patched
  tar -xzf "$archive" -C .patched
  mv ".patched/$name-$version" "$dest"
  for diff_file in "${diff_files[@]}"; do
    git apply --directory="$dest" "$diff_file"
  done
  # The archive keeps its release mtimes; make every file newer than any build of an
  # earlier patch set so that cargo rebuilds the crate instead of reusing a stale artifact.
  find "$dest" -type f -exec touch {} +
  echo "$want" > "$stamp"
  echo "patch-crates: $dest ready (${diff_files[*]##*/} applied)"
done
