#!/usr/bin/env bash
# Installs chiplofi as a systemd service on Debian or Ubuntu. Run as root from a source checkout:
#
#   deploy/install.sh            # packages, /opt/chiplofi/venv, user chiplofi, /etc/chiplofi, units
#   deploy/install.sh --start    # ... and start chiplofi.service
#   deploy/install.sh --uninstall [--purge]
#
# Running it again changes nothing unless the source changed. `--help` explains every option.
set -euo pipefail

NAME=chiplofi
SERVICE_USER=chiplofi
UNITS=(chiplofi.service chiplofi@.service)
SOURCE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"

usage() {
    cat <<EOF
Usage: deploy/install.sh [OPTIONS]

Installs chiplofi from this source tree ($SOURCE_DIR) as a systemd service:
  - the Debian packages marked "run" in deploy/apt-packages.txt (apt-get, only the missing ones);
  - a virtual environment /opt/chiplofi/venv with torch pinned as in the Makefile, then chiplofi
    (reinstalled only when the source changed);
  - the system user $SERVICE_USER (group $SERVICE_USER, also in group audio for the speakers);
  - /etc/chiplofi/chiplofi.toml from deploy/config.example.toml and /etc/chiplofi/chiplofi.env
    (mode 0600, for CHIPLOFI_STREAM_KEY=...); existing files are never overwritten;
  - systemd/chiplofi.service and systemd/chiplofi@.service in /etc/systemd/system, and enables
    chiplofi.service (it starts at boot; --start starts it now).

Options:
  --start          start (or restart, if installed files changed) chiplofi.service now
  --uninstall      stop and disable every chiplofi unit, remove the units and /opt/chiplofi;
                   keeps /etc/chiplofi, the recordings in /var/lib/chiplofi and the user
  --purge          with --uninstall: also remove /etc/chiplofi, /var/lib/chiplofi and the user
  --root DIR       install under DIR instead of / (also: CHIPLOFI_ROOT=DIR), e.g. to check the
                   installer; Debian packages are still those of this machine (add --no-apt), and
                   a virtual environment only works at the path it was made at
  --no-apt         do not check or install Debian packages
  --no-systemctl   do not call systemctl (no reload, enable, start or stop)
  -h, --help       show this help

Environment: PYTHON (default python3) makes the virtual environment; pip's own variables
(PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, ...) are passed through.
EOF
}

die() {
    echo "install.sh: error: $*" >&2
    exit 1
}

say() {
    echo "install.sh: $*"
}

ROOT="${CHIPLOFI_ROOT:-/}"
START=0
UNINSTALL=0
PURGE=0
APT=1
SYSTEMCTL=1
while [ $# -gt 0 ]; do
    case "$1" in
        --start) START=1 ;;
        --uninstall) UNINSTALL=1 ;;
        --purge) PURGE=1 ;;
        --root)
            [ $# -ge 2 ] || die "--root needs a directory"
            ROOT="$2"
            shift
            ;;
        --root=*) ROOT="${1#--root=}" ;;
        --no-apt) APT=0 ;;
        --no-systemctl) SYSTEMCTL=0 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
done

[ "$PURGE" = 0 ] || [ "$UNINSTALL" = 1 ] || die "--purge only goes with --uninstall"
[ "$START" = 0 ] || [ "$UNINSTALL" = 0 ] || die "--start does not go with --uninstall"
[ "$(id -u)" = 0 ] || die "run as root (it installs packages, a system user and systemd units)"
[ -d "$ROOT" ] || die "--root $ROOT: no such directory"
ROOT="$(cd "$ROOT" && pwd)"
if [ "$ROOT" = / ]; then
    R=""
    ROOT_OPTS=()
else
    R="$ROOT"
    ROOT_OPTS=(--root "$ROOT")
    [ "$START" = 0 ] || die "--start needs the real root (the units under $ROOT are not loaded)"
fi

PREFIX="$R/opt/$NAME"
VENV="$PREFIX/venv"
ETC="$R/etc/$NAME"
UNIT_DIR="$R/etc/systemd/system"
STATE="$R/var/lib/$NAME"
STAMP="$VENV/.chiplofi-source"
CHANGED=0 # set when an installed unit or the venv changed: systemd reloads, a running service restarts

# systemctl on the real system, or offline on the files under --root (enable/disable only).
run_systemctl() {
    [ "$SYSTEMCTL" = 1 ] || return 0
    systemctl "${ROOT_OPTS[@]}" "$@"
}

# Installs $1 as $2 with mode $3 unless $2 already has that content and mode.
install_file() {
    local source="$1" target="$2" mode="$3"
    if [ -f "$target" ] && cmp -s "$source" "$target" && [ "$(stat -c %a "$target")" = "${mode#0}" ]; then
        return 1
    fi
    install -D -m "$mode" "$source" "$target"
    say "installed $target"
}

group_id() {
    awk -F: -v name="$1" '$1 == name { print $3 }' "$R/etc/group"
}

# ----------------------------------------------------------------------------- install

install_packages() {
    [ "$APT" = 1 ] || return 0
    local package role missing=()
    while read -r package role _; do
        case "$package" in "" | "#"*) continue ;; esac
        [ "$role" = run ] || continue
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$package")
        fi
    done <"$SOURCE_DIR/deploy/apt-packages.txt"
    [ ${#missing[@]} -gt 0 ] || return 0
    say "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# What the venv was built from: the pinned torch and every file of the packages pip installs.
source_fingerprint() {
    (
        cd "$SOURCE_DIR"
        echo "$TORCH_PIN"
        find pyproject.toml README.md LICENSE streamer models soundfonts -type f \
            ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum
    ) | sha256sum | cut -d' ' -f1
}

install_venv() {
    TORCH_PIN="$(sed -n 's/^TORCH_PIN := *//p' "$SOURCE_DIR/Makefile")"
    [ -n "$TORCH_PIN" ] || die "$SOURCE_DIR/Makefile: no TORCH_PIN line"
    local fingerprint
    fingerprint="$(source_fingerprint)"
    if [ -x "$VENV/bin/$NAME" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$fingerprint" ]; then
        return 0
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating $VENV"
        mkdir -p "$PREFIX"
        "$PYTHON" -m venv "$VENV"
    fi
    # torch first, pinned: unpinned, pip would pull a much larger CUDA build.
    "$VENV/bin/pip" install -q --disable-pip-version-check "$TORCH_PIN"
    "$VENV/bin/pip" install -q --disable-pip-version-check "$SOURCE_DIR"
    echo "$fingerprint" >"$STAMP"
    CHANGED=1
    say "installed chiplofi into $VENV"
}

install_user() {
    if ! awk -F: -v name="$SERVICE_USER" '$1 == name { found = 1 } END { exit !found }' "$R/etc/passwd"; then
        useradd "${ROOT_OPTS[@]}" --system --user-group --home-dir "/var/lib/$NAME" --no-create-home \
            --shell /usr/sbin/nologin --groups audio --comment "chiplofi radio" "$SERVICE_USER"
        say "created the system user $SERVICE_USER"
    elif ! awk -F: -v user="$SERVICE_USER" '$1 == "audio" { n = split($4, m, ","); for (i = 1; i <= n; i++) if (m[i] == user) found = 1 }
            END { exit !found }' "$R/etc/group"; then
        usermod "${ROOT_OPTS[@]}" --append --groups audio "$SERVICE_USER"
        say "added $SERVICE_USER to the group audio"
    fi
}

install_config() {
    local gid
    gid="$(group_id "$SERVICE_USER")"
    [ -n "$gid" ] || die "$R/etc/group: no group $SERVICE_USER"
    if [ ! -d "$ETC" ]; then
        install -d -m 0750 -o 0 -g "$gid" "$ETC"
        say "created $ETC"
    fi
    # The daemon (user chiplofi) reads the config; only root reads the key, and hands it over.
    if [ ! -e "$ETC/$NAME.toml" ]; then
        install -m 0640 -o 0 -g "$gid" "$SOURCE_DIR/deploy/config.example.toml" "$ETC/$NAME.toml"
        say "wrote $ETC/$NAME.toml (every key with its default; edit it, then restart)"
    fi
    if [ ! -e "$ETC/$NAME.env" ]; then
        (
            umask 077
            printf '%s\n' "# The YouTube stream key (or your ingest's); empty = record locally only." \
                "CHIPLOFI_STREAM_KEY=" >"$ETC/$NAME.env"
        )
        chown 0:0 "$ETC/$NAME.env"
        say "wrote $ETC/$NAME.env (mode 0600): put the stream key there"
    fi
}

install_units() {
    local unit
    for unit in "${UNITS[@]}"; do
        if install_file "$SOURCE_DIR/systemd/$unit" "$UNIT_DIR/$unit" 0644; then
            CHANGED=1
        fi
    done
    install_file "$SOURCE_DIR/README.md" "$PREFIX/README.md" 0644 || true
    if [ -z "$R" ] && [ "$CHANGED" = 1 ]; then
        run_systemctl daemon-reload
    fi
    if [ "$SYSTEMCTL" = 1 ] && ! systemctl "${ROOT_OPTS[@]}" --quiet is-enabled "$NAME.service" 2>/dev/null; then
        run_systemctl enable "$NAME.service"
        say "enabled $NAME.service"
    fi
}

start_service() {
    if [ "$START" = 0 ]; then
        if [ -z "$R" ] && [ "$CHANGED" = 1 ] && [ "$SYSTEMCTL" = 1 ] && systemctl --quiet is-active "$NAME.service"; then
            say "installed files changed: 'systemctl restart $NAME' (or $NAME@NAME) runs the new ones"
        fi
        return 0
    fi
    if [ "$CHANGED" = 1 ]; then
        run_systemctl restart "$NAME.service"
    else
        run_systemctl start "$NAME.service"
    fi
    say "started $NAME.service (journalctl -u $NAME -f shows its log)"
}

# ----------------------------------------------------------------------------- uninstall

installed_units() {
    # Every chiplofi unit and instance systemd knows of under this root: files and enablement links.
    find "$UNIT_DIR" \( -name 'chiplofi.service' -o -name 'chiplofi@*.service' \) -printf '%f\n' 2>/dev/null |
        grep -v '^chiplofi@\.service$' | sort -u || true
}

uninstall() {
    local units=() unit gid
    mapfile -t units < <(installed_units)
    if [ ${#units[@]} -gt 0 ]; then
        if [ -z "$R" ]; then
            run_systemctl stop "${units[@]}" || true
        fi
        run_systemctl disable "${units[@]}"
    fi
    for unit in "${UNITS[@]}"; do
        if [ -e "$UNIT_DIR/$unit" ]; then
            rm -f "$UNIT_DIR/$unit"
            say "removed $UNIT_DIR/$unit"
        fi
    done
    if [ -z "$R" ]; then
        run_systemctl daemon-reload
    fi
    if [ -e "$PREFIX" ]; then
        rm -rf "$PREFIX"
        say "removed $PREFIX"
    fi
    if [ "$PURGE" = 0 ]; then
        say "kept $ETC, $STATE and the user $SERVICE_USER (--purge removes them)"
        return 0
    fi
    rm -rf "$ETC" "$STATE"
    say "removed $ETC and $STATE"
    if awk -F: -v name="$SERVICE_USER" '$1 == name { found = 1 } END { exit !found }' "$R/etc/passwd"; then
        userdel "${ROOT_OPTS[@]}" "$SERVICE_USER"
        say "removed the user $SERVICE_USER"
    fi
    gid="$(group_id "$SERVICE_USER")"
    if [ -n "$gid" ]; then
        groupdel "${ROOT_OPTS[@]}" "$SERVICE_USER"
    fi
}

# ----------------------------------------------------------------------------- main

[ -f "$SOURCE_DIR/pyproject.toml" ] || die "$SOURCE_DIR is not a chiplofi source tree"
if [ "$UNINSTALL" = 1 ]; then
    uninstall
    exit 0
fi
install_packages
install_venv
install_user
install_config
install_units
start_service
say "done"
