#!/bin/bash
# PID 1 of a throwaway system for tests/integration/test_systemd_namespace.py: run as
#
#   unshare --fork --pid --mount --uts --ipc --mount-proc bash systemd_boot.sh LAYERS SHARE
#
# and it boots this machine's own systemd as PID 1 of the new PID namespace, on a view of this
# machine's root that nothing done inside can change or clean up:
#   - /etc, /opt and /var are overlays whose changes go to LAYERS (the installer's user, venv,
#     units, config, state directory, journal);
#   - /tmp, /run and /dev/shm are fresh tmpfs (systemd-tmpfiles would otherwise empty this
#     machine's /tmp at "boot");
#   - SHARE (a test's directory) is seen inside at /mnt;
#   - the boot target is an empty one, and every unit of this machine that a service would pull
#     in through sysinit.target, sockets.target or timers.target is masked (inside only), except
#     journald: nothing sets sysctls, loads modules, creates device nodes, remounts filesystems,
#     trims disks or starts this machine's own services (nginx, postgresql, ...).
# The network namespace is this machine's: the unit under test streams to a loopback nginx.
set -euo pipefail
layers=$1
share=$2

mount --make-rprivate /
for dir in etc opt var; do
    mkdir -p "$layers/$dir-upper" "$layers/$dir-work"
    mount -t overlay "chiplofi-test-$dir" \
        -o "lowerdir=/$dir,upperdir=$layers/$dir-upper,workdir=$layers/$dir-work" "/$dir"
done
mount --bind "$share" /mnt
for dir in /tmp /run /dev/shm; do
    mount -t tmpfs -o mode=1777 "chiplofi-test-tmp" "$dir"
done
chmod 755 /run

units=/etc/systemd/system
mask() {
    local unit
    for unit; do
        case "$unit" in
            systemd-journald.service|systemd-journald.socket|systemd-journald-dev-log.socket) ;;
            *) ln -sfn /dev/null "$units/$unit" ;;
        esac
    done
}
for target in sysinit local-fs sockets timers paths basic multi-user; do
    for wants in "/usr/lib/systemd/system/$target.target.wants" "$units/$target.target.wants"; do
        if [ -d "$wants" ]; then
            for unit in "$wants"/*; do [ -e "$unit" ] && mask "$(basename "$unit")"; done
        fi
    done
done
mask tmp.mount systemd-remount-fs.service systemd-fsck-root.service systemd-udevd.service \
    systemd-udev-trigger.service systemd-udev-settle.service systemd-tmpfiles-clean.service \
    systemd-networkd.service systemd-networkd-wait-online.service systemd-resolved.service \
    NetworkManager-wait-online.service
printf '[Unit]\nDescription=chiplofi test boot (starts nothing)\n' >"$units/chiplofi-test.target"

exec env -i container=chiplofi-test PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    /lib/systemd/systemd --unit=chiplofi-test.target
