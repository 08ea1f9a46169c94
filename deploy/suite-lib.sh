# Shared by the test suites' run.sh scripts: sourced, never run.
#   source "$repo/deploy/suite-lib.sh"

# pinned_venv VENV REQUIREMENTS: makes the virtualenv VENV if missing and installs the pinned
# REQUIREMENTS into it, again only when the pins have changed since the last install.
pinned_venv() {
  local venv=$1 requirements=$2
  if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
  fi
  if ! cmp -s "$requirements" "$venv/.requirements.txt"; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/.requirements.txt"
  fi
}

# cargo_target_dir REPO: the workspace's target directory as cargo resolves it (CARGO_TARGET_DIR
# and .cargo/config.toml included), where the suites find the binaries cargo built.
cargo_target_dir() {
  (cd "$1" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
}
