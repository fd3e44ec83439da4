#!/usr/bin/env bash
# The whole test suite: what CI runs after fmt and clippy, and the README's second command.
# Some tests need a real Redis (the shared store): one must answer at
# SG_TEST_REDIS_URL (default redis://127.0.0.1:6379). If none does, this starts
# one (installing Debian's redis-server if it is missing). Tests use key
# prefixes of their own and delete their keys; nothing is written to disk.
# tests/deploy needs kubectl and promtool (both from Debian if missing, below), and
# tests/e2e/schemathesis.rs Schemathesis (installed from PyPI if missing, below).
set -euo pipefail
cd "$(dirname "$0")/.."

# The outage tests also run private redis-servers of their own: the binary must be here.
if ! command -v redis-server >/dev/null; then
  echo "--- installing redis-server (Debian)"
  sudo_cmd=""
  [[ "$(id -u)" != 0 ]] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq redis-server >/dev/null
fi

# The cluster tests create their clusters with redis-cli (Debian's redis-tools,
# which redis-server depends on; installed on its own if it is missing anyway).
if ! command -v redis-cli >/dev/null; then
  echo "--- installing redis-cli (Debian's redis-tools)"
  sudo_cmd=""
  [[ "$(id -u)" != 0 ]] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq redis-tools >/dev/null
fi

# tests/deploy renders deploy/'s kustomize overlays with `kubectl kustomize`.
# Debian's kubernetes-client is kubectl 1.20 (kustomize v2.0.3): the overlays
# are written to render with it as well as with a current kubectl.
if ! command -v kubectl >/dev/null; then
  echo "--- installing kubectl (Debian's kubernetes-client)"
  sudo_cmd=""
  [[ "$(id -u)" != 0 ]] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq kubernetes-client >/dev/null
fi

# tests/deploy runs `promtool check rules` and `promtool test rules` on
# deploy/observability/. promtool comes from Debian's `prometheus` package; it is
# unpacked (apt-get download + dpkg -x) into the user's cache rather than
# installed, because installing the package also enables and starts a Prometheus
# server (systemd) on a developer's machine. The test reads its path from SG_PROMTOOL.
if command -v promtool >/dev/null; then
  export SG_PROMTOOL="$(command -v promtool)"
else
  prom_dir="${XDG_CACHE_HOME:-$HOME/.cache}/summary-gateway/prometheus-deb"
  if [[ ! -x "${prom_dir}/usr/bin/promtool" ]]; then
    echo "--- unpacking promtool (Debian's prometheus package) into ${prom_dir}"
    sudo_cmd=""
    [[ "$(id -u)" != 0 ]] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    rm -rf "${prom_dir}"
    mkdir -p "${prom_dir}/deb"
    (cd "${prom_dir}/deb" && apt-get download -qq prometheus)
    dpkg -x "${prom_dir}"/deb/prometheus_*.deb "${prom_dir}"
    rm -rf "${prom_dir}/deb"
  fi
  export SG_PROMTOOL="${prom_dir}/usr/bin/promtool"
fi

# tests/e2e/schemathesis.rs runs Schemathesis (PyPI) against the demo: a pinned
# version in a virtualenv of its own under the user's cache, installed once.
# The test reads its path from SG_SCHEMATHESIS.
SCHEMATHESIS_VERSION=4.32.5
st_venv="${XDG_CACHE_HOME:-$HOME/.cache}/summary-gateway/schemathesis-${SCHEMATHESIS_VERSION}"
if ! "${st_venv}/bin/st" --version 2>/dev/null | grep -qF "${SCHEMATHESIS_VERSION}"; then
  echo "--- installing Schemathesis ${SCHEMATHESIS_VERSION} (PyPI) into ${st_venv}"
  command -v python3 >/dev/null || { echo "python3 (3.9 or later, with venv and pip) is needed for Schemathesis" >&2; exit 1; }
  # An interrupted install leaves an `st` that does not run (or is not there): the
  # check above fails next time, and this starts again from nothing.
  rm -rf "${st_venv}"
  mkdir -p "$(dirname "${st_venv}")"
  python3 -m venv "${st_venv}"
  "${st_venv}/bin/pip" install --quiet --disable-pip-version-check --no-input "schemathesis==${SCHEMATHESIS_VERSION}"
fi
export SG_SCHEMATHESIS="${st_venv}/bin/st"

# tests/e2e/examples.rs runs the client examples against the demo. The Python one's
# packages (examples/python/requirements.txt, every version pinned) go into a
# virtualenv of their own, the TypeScript one's (tsx to run it, tsc to type-check
# it: examples/typescript/package-lock.json) into a folder of their own; both
# under the user's cache, keyed by the hash of the file they come from, installed
# once. A `.installed` file marks a finished install: an interrupted one is redone
# from nothing. The test reads the paths from SG_EXAMPLES_PYTHON and
# SG_EXAMPLES_NODE_MODULES.
sg_cache="${XDG_CACHE_HOME:-$HOME/.cache}/summary-gateway"
py_req=examples/python/requirements.txt
py_venv="${sg_cache}/examples-python-$(sha256sum "${py_req}" | cut -c1-16)"
if [[ ! -f "${py_venv}/.installed" ]]; then
  echo "--- installing the Python client example's packages (PyPI) into ${py_venv}"
  command -v python3 >/dev/null || { echo "python3 (3.10 or later, with venv and pip) is needed for examples/python" >&2; exit 1; }
  rm -rf "${py_venv}"
  mkdir -p "${sg_cache}"
  python3 -m venv "${py_venv}"
  "${py_venv}/bin/pip" install --quiet --disable-pip-version-check --no-input -r "${py_req}"
  touch "${py_venv}/.installed"
fi
export SG_EXAMPLES_PYTHON="${py_venv}/bin/python"
node_lock=examples/typescript/package-lock.json
node_dir="${sg_cache}/examples-node-$(sha256sum "${node_lock}" | cut -c1-16)"
if [[ ! -f "${node_dir}/.installed" ]]; then
  echo "--- installing the TypeScript client example's packages (npm) into ${node_dir}"
  command -v npm >/dev/null || { echo "Node.js 20 (node and npm) is needed for examples/typescript" >&2; exit 1; }
  rm -rf "${node_dir}"
  mkdir -p "${node_dir}"
  cp examples/typescript/package.json "${node_lock}" "${node_dir}/"
  (cd "${node_dir}" && npm ci --silent --no-audit --no-fund >/dev/null)
  touch "${node_dir}/.installed"
fi
export SG_EXAMPLES_NODE_MODULES="${node_dir}/node_modules"

port="${SG_TEST_REDIS_PORT:-6379}"
if [[ -z "${SG_TEST_REDIS_URL:-}" ]]; then
  export SG_TEST_REDIS_URL="redis://127.0.0.1:${port}"
  if ! (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null; then
    echo "--- starting redis-server on 127.0.0.1:${port}"
    redis-server --port "${port}" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes >/dev/null
    for _ in $(seq 1 50); do
      (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null && break
      sleep 0.1
    done
  fi
fi
# The production build (deploy/Dockerfile: --no-default-features) compiles and has no
# demo, no simulators and no demo key. Before the tests: `cargo test` builds the binary
# again with its default features, which the e2e tests start.
echo "--- the production build: no demo, no simulators"
cargo build --locked -p summary-gateway --no-default-features
prod_bin=target/debug/summary-gateway
if "${prod_bin}" demo --help >/dev/null 2>&1 || "${prod_bin}" simulate --help >/dev/null 2>&1; then
  echo "the --no-default-features binary still has demo or simulate" >&2
  exit 1
fi
for marker in demo-key demo-commbox-token demo-elevateai-token AI_API_SUMMARY_; do
  if grep -qF "${marker}" "${prod_bin}"; then
    echo "the --no-default-features binary holds ${marker} (simulator or demo code)" >&2
    exit 1
  fi
done

cargo test --workspace --locked "$@"
