# Shared setup for ./run.sh, ./test.sh and bench/run.sh: bash functions that make a
# fresh Debian machine ready (packages, an unpacked sendmail, a venv) and run a
# command inside a private, loopback-only network namespace (TESTBED.md rule one).
# Source it; every function is idempotent.

ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
CACHE=${BMS_CACHE:-$ROOT/.cache}

log() { printf '[setup] %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

_apt_updated=0
apt_install() {
    # Install the Debian packages that are not installed yet.
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$p")
    done
    [ ${#missing[@]} = 0 ] && return 0
    log "installing Debian packages: ${missing[*]}"
    if [ $_apt_updated = 0 ]; then
        as_root apt-get update -qq
        _apt_updated=1
    fi
    # Postfix must not configure (or start) a system instance: tests run their own.
    echo "postfix postfix/main_mailer_type select No configuration" | as_root debconf-set-selections
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

ensure_python() {
    if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        apt_install python3 python3-venv
    fi
}

ensure_venv() {
    # ensure_venv DIR SPEC: a virtualenv at DIR with the pip requirement SPEC installed.
    local dir=$1 spec=$2 stamp
    ensure_python
    stamp="$(cat "$ROOT/pyproject.toml" | sha1sum | cut -c1-16) $spec"
    if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.stamp" 2>/dev/null)" = "$stamp" ]; then
        return 0
    fi
    log "creating virtualenv $dir ($spec)"
    python3 -m venv "$dir"
    "$dir/bin/pip" install -q --upgrade pip
    (cd "$ROOT" && "$dir/bin/pip" install -q -e "$spec")
    echo "$stamp" > "$dir/.stamp"
}

PYMILTER_VENV=$ROOT/.venv-pymilter
ensure_pymilter() {
    # pymilter, compiled against the real libmilter, in a virtualenv of its own
    # ($PYMILTER_VENV; there `import Milter` is pymilter): the reference that the
    # comparison tests and the benchmark measure Milter against.
    (cd / && "$PYMILTER_VENV/bin/python" -c 'import milter, Milter' 2>/dev/null) && return 0
    apt_install libmilter-dev gcc libc6-dev
    ensure_python
    python3 -c 'import os, sysconfig; os.stat(sysconfig.get_paths()["include"] + "/Python.h")' \
        2>/dev/null || apt_install python3-dev
    log "creating virtualenv $PYMILTER_VENV (pymilter)"
    python3 -m venv "$PYMILTER_VENV"
    "$PYMILTER_VENV/bin/pip" install -q --upgrade pip
    "$PYMILTER_VENV/bin/pip" install -q "pymilter==1.0.5"
}

CONFORMANCE=$CACHE/conformance
ensure_conformance() {
    # The conformance tier (tests/conformance) runs code nobody here wrote on
    # Milter: pymilter's sdists (its test modules, sample.py, 1.0.4's
    # milter-template.py, 1.0's testgrey.py) and two milters from PyPI, dkimpy-milter and
    # spf-engine.  They are downloaded once into $CONFORMANCE; the milters go
    # into .venv without dependencies (never pymilter there) and into
    # $PYMILTER_VENV with theirs, to run the same program on real pymilter.
    local venv=$ROOT/.venv tmp
    mkdir -p "$CONFORMANCE"
    if [ ! -f "$CONFORMANCE/pymilter-1.0.5.tar.gz" ] || [ ! -f "$CONFORMANCE/pymilter-1.0.4.tar.gz" ] \
        || [ ! -f "$CONFORMANCE/pymilter-1.0.tar.gz" ] \
        || [ ! -f "$CONFORMANCE/dkimpy-milter-1.2.3.tar.gz" ] \
        || [ ! -f "$CONFORMANCE/spf_engine-3.1.0-py3-none-any.whl" ]; then
        log "downloading the conformance tier's packages into $CONFORMANCE"
        tmp=$(mktemp -d "$CONFORMANCE/.dl.XXXXXX")
        for req in pymilter==1.0.5 pymilter==1.0.4 pymilter==1.0 dkimpy-milter==1.2.3; do
            "$venv/bin/pip" download -q --no-deps --no-binary :all: -d "$tmp" "$req"
        done
        "$venv/bin/pip" download -q --no-deps --only-binary :all: -d "$tmp" spf-engine==3.1.0
        mv -f "$tmp"/* "$CONFORMANCE/"
        rmdir "$tmp"
    fi
    if ! "$venv/bin/python" -c 'import dkimpy_milter, spf_engine' 2>/dev/null; then
        log "installing dkimpy-milter and spf-engine into $venv (no dependencies)"
        "$venv/bin/pip" install -q --no-deps "$CONFORMANCE/dkimpy-milter-1.2.3.tar.gz" \
            "$CONFORMANCE/spf_engine-3.1.0-py3-none-any.whl"
    fi
    if ! (cd / && "$PYMILTER_VENV/bin/python" -c 'import dkimpy_milter, spf_engine') 2>/dev/null; then
        log "installing dkimpy-milter and spf-engine into $PYMILTER_VENV"
        "$PYMILTER_VENV/bin/pip" install -q "$CONFORMANCE/dkimpy-milter-1.2.3.tar.gz" \
            "$CONFORMANCE/spf_engine-3.1.0-py3-none-any.whl"
    fi
}

SENDMAIL_ROOT=$CACHE/sendmail
ensure_sendmail() {
    # Sendmail conflicts with the postfix package, so it is unpacked, not installed.
    [ -x "$SENDMAIL_ROOT/usr/libexec/sendmail/sendmail" ] && return 0
    apt_install m4
    local debs=$CACHE/debs deps
    mkdir -p "$debs"
    log "downloading and unpacking sendmail into $SENDMAIL_ROOT"
    (cd "$debs" && chmod 777 . && apt-get download -q sendmail-bin sendmail-base sendmail-cf >/dev/null 2>&1) \
        || { as_root apt-get update -qq; (cd "$debs" && apt-get download -q sendmail-bin sendmail-base sendmail-cf >/dev/null); }
    # Its shared libraries are ordinary packages: install them.
    deps=$(dpkg-deb -f "$debs"/sendmail-bin_*.deb Depends | tr ',' '\n' \
           | sed -e 's/^ *//' -e 's/ .*//' | grep '^lib' || true)
    # shellcheck disable=SC2086
    apt_install $deps
    rm -rf "$SENDMAIL_ROOT.tmp"
    for d in "$debs"/*.deb; do dpkg -x "$d" "$SENDMAIL_ROOT.tmp"; done
    mv "$SENDMAIL_ROOT.tmp" "$SENDMAIL_ROOT"
}

run_in_netns() {
    # run_in_netns CMD...: run CMD in a new network namespace that has only
    # loopback, with /etc/resolv.conf and /etc/hosts replaced by loopback-only
    # copies, so nothing (sendmail's own hostname lookup included) leaves the machine.
    apt_install iproute2
    local tmp
    tmp=$(mktemp -d /tmp/bms-netns.XXXXXX)
    printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n' > "$tmp/resolv.conf"
    # A qualified alias is needed: sendmail sleeps 60 s at startup when no name
    # of its own host has a dot ("My unqualified host name ... unknown").
    printf '127.0.0.1 localhost localhost.localdomain %s\n::1 localhost ip6-localhost %s\n' \
        "$(hostname)" "$(hostname)" > "$tmp/hosts"
    local rc=0
    as_root unshare -m -n --propagation private env BMS_NETNS=1 bash -c '
        set -e
        ip link set lo up
        mount --bind "$0/resolv.conf" /etc/resolv.conf
        mount --bind "$0/hosts" /etc/hosts
        exec "$@"' "$tmp" "$@" || rc=$?
    rm -rf "$tmp"
    return $rc
}

ORIGINAL_BMS_CFG=$CACHE/milter-0.8.18/milter.cfg
ensure_original_bms() {
    # The original bms's sample config (milter.cfg in the milter 0.8.18 sdist on
    # PyPI), which tests/ops/test_original_sample.py checks bms loads.
    [ -s "$ORIGINAL_BMS_CFG" ] && return 0
    local tmp
    tmp=$(mktemp -d "$CACHE/milter-sdist.XXXXXX")
    log "downloading the milter 0.8.18 sdist (the original bms) into $CACHE"
    "$ROOT/.venv/bin/pip" download -q --no-binary :all: --no-deps -d "$tmp" milter==0.8.18
    tar -xzf "$tmp"/milter-0.8.18.tar.gz -C "$tmp" milter-0.8.18/milter.cfg
    mkdir -p "$(dirname "$ORIGINAL_BMS_CFG")"
    mv "$tmp/milter-0.8.18/milter.cfg" "$ORIGINAL_BMS_CFG"
    rm -rf "$tmp"
}
