#!/usr/bin/env bash
# Makes the binary journal fixtures of journal_file.rs with systemd's own writer:
#   {regular,compact}-{zstd,xz,lz4}.journal.zst   journal files (zstd'ed: they are 8 MiB, mostly
#                                                   a zeroed hash table), and
#   {regular,compact}.export                        `journalctl -o export` of each.
# systemd-journal-remote writes the files (SYSTEMD_JOURNAL_COMPACT=0/1). Debian 12's systemd 252
# compresses with ZSTD only, so the XZ and LZ4 files are the ZSTD file with its one compressed
# field re-encoded as systemd does (XZ: an .xz stream without check; LZ4: an 8-byte
# little-endian size, then one LZ4 block from liblz4) in a new data object at the end, the entry
# re-pointed to it; journalctl must read every file back to the same export, or this fails.
# Needs: apt-get install systemd-journal-remote zstd liblz4-1 python3.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
remote=/usr/lib/systemd/systemd-journal-remote
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$work/in.export" <<'EOF'
import sys
boot = "0123456789abcdef0123456789abcdef"
common = dict(_BOOT_ID=boot, _HOSTNAME="ip-10-0-1-17", _MACHINE_ID="3d1219c7c4c5404aaa1f6d2a48adfda4")
entries = [
    dict(SYSLOG_IDENTIFIER="sshd", _COMM="sshd", _EXE="/usr/sbin/sshd", _PID="4121", _UID="0",
         _SYSTEMD_UNIT="ssh.service", PRIORITY="6",
         MESSAGE="Accepted publickey for alice from 203.0.113.7 port 52144 ssh2: ED25519 SHA256:Vd7Kp0Q3mNfY1kq1sBqLQmS0p8m1f4xT9e2r3c5u6w8"),
    dict(SYSLOG_IDENTIFIER="sshd", _COMM="sshd", _PID="4170", _UID="0", _SYSTEMD_UNIT="ssh.service",
         MESSAGE="Failed password for invalid user admin from 198.51.100.9 port 40022 ssh2"),
    dict(SYSLOG_IDENTIFIER="sudo", _COMM="sudo", _EXE="/usr/bin/sudo", _PID="4200", _UID="1000",
         MESSAGE="   alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id -u"),
    dict(SYSLOG_IDENTIFIER="su", _COMM="su", _PID="4300", _UID="1000",
         MESSAGE="(to root) alice on pts/0"),
    # Longer than systemd's 512-byte threshold: the one compressed field.
    dict(SYSLOG_IDENTIFIER="kernel", MESSAGE="audit: " + " ".join(f"key{i}=value{i}" for i in range(200))),
    dict(SYSLOG_IDENTIFIER="systemd", _COMM="systemd", _PID="1", _UID="0", _SYSTEMD_UNIT="init.scope",
         MESSAGE="Started session-7.scope - Session 7 of User alice."),
]
with open(sys.argv[1], "w") as f:
    for i, e in enumerate(entries):
        f.write(f"__REALTIME_TIMESTAMP={1795946281123456 + i * 1000001}\n")
        f.write(f"__MONOTONIC_TIMESTAMP={1000000 + i}\n")
        for k, v in {**common, **e}.items():
            f.write(f"{k}={v}\n")
        f.write("\n")
EOF

recompress() { # FILE OUT xz|lz4
python3 - "$@" <<'EOF'
import ctypes, lzma, struct, subprocess, sys
src, dst, codec = sys.argv[1:4]
b = bytearray(open(src, "rb").read())
u32 = lambda o: struct.unpack_from("<I", b, o)[0]
u64 = lambda o: struct.unpack_from("<Q", b, o)[0]
INCOMPAT = 12
compact = u32(INCOMPAT) & 16
head = 72 if compact else 64
item = 4 if compact else 16
# The compressed data object, and the entry item that points to it.
arr, found = u64(176), None
while arr:
    size = u64(arr + 8)
    n = (size - 24) // (4 if compact else 8)
    for i in range(n):
        e = u32(arr + 24 + 4 * i) if compact else u64(arr + 24 + 8 * i)
        if e == 0:
            break
        for k in range((u64(e + 8) - 64) // item):
            at = e + 64 + k * item
            d = u32(at) if compact else u64(at)
            if b[d + 1] & 4:
                found = (at, d)
    arr = u64(arr + 16)
at, d = found
payload = bytes(b[d + head : d + u64(d + 8)])
plain = subprocess.run(["zstd", "-dc"], input=payload, capture_output=True, check=True).stdout
if codec == "xz":
    new, flag, incompat = lzma.compress(plain, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE), 1, 1
else:
    lz4 = ctypes.CDLL("liblz4.so.1")
    out = ctypes.create_string_buffer(len(plain) + 1024)
    n = lz4.LZ4_compress_default(plain, out, len(plain), len(out))
    assert n > 0
    new, flag, incompat = struct.pack("<Q", len(plain)) + out.raw[:n], 2, 2
# A copy of the data object (hash, links) with the new payload, after the last object.
tail = u64(136)
end = (tail + u64(tail + 8) + 7) & ~7
obj = bytearray(b[d : d + head]) + new
obj[1] = flag
struct.pack_into("<Q", obj, 8, len(obj))
b[end : end + len(obj)] = obj
if compact:
    struct.pack_into("<I", b, at, end)
else:
    struct.pack_into("<Q", b, at, end)
struct.pack_into("<I", b, INCOMPAT, (u32(INCOMPAT) & ~8) | incompat)
struct.pack_into("<Q", b, 136, end)          # tail_object_offset
struct.pack_into("<Q", b, 144, u64(144) + 1) # n_objects
open(dst, "wb").write(b)
EOF
}

for mode in regular compact; do
    compact=0
    [ "$mode" = compact ] && compact=1
    zstd_file="$work/$mode-zstd.journal"
    SYSTEMD_JOURNAL_COMPACT=$compact "$remote" --compress=yes --output="$zstd_file" - <"$work/in.export"
    journalctl --file="$zstd_file" -o export >"$here/$mode.export"
    recompress "$zstd_file" "$work/$mode-xz.journal" xz
    recompress "$zstd_file" "$work/$mode-lz4.journal" lz4
    for codec in zstd xz lz4; do
        f="$work/$mode-$codec.journal"
        flags=$(journalctl --header --file="$f" | grep 'Incompatible flags')
        echo "$mode-$codec: $flags"
        case "$codec" in zstd) want=ZSTD ;; xz) want=XZ ;; lz4) want=LZ4 ;; esac
        grep -q "COMPRESSED-$want" <<<"$flags"
        [ "$compact" = 1 ] && grep -q COMPACT <<<"$flags"
        cmp <(journalctl --file="$f" -o export) "$here/$mode.export"
        zstd -q -19 -f "$f" -o "$here/$mode-$codec.journal.zst"
    done
done
ls -l "$here"

# Fuzz seeds (fuzz/corpus/journal_file/): the same files without their hash tables (which
# the parser never reads) and the zeroed tail, offsets moved down, so they fit a fuzz input.
seeds="$here/../../../../../fuzz/corpus/journal_file"
mkdir -p "$seeds"
for f in "$work"/*.journal; do
python3 - "$f" "$seeds/$(basename "$f" .journal)" <<'EOF2'
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
u32 = lambda o: struct.unpack_from("<I", b, o)[0]
u64 = lambda o: struct.unpack_from("<Q", b, o)[0]
compact = u32(12) & 16
hs = u64(88)
first = hs
while b[first] in (4, 5):  # the field and data hash tables
    first = (first + u64(first + 8) + 7) & ~7
delta = first - hs
tail = u64(136)
end = tail + u64(tail + 8)
fixes = []  # (offset in b, width)
arr = u64(176)
while arr:
    fixes.append((arr + 16, 8))
    for i in range((u64(arr + 8) - 24) // (4 if compact else 8)):
        at = arr + 24 + i * (4 if compact else 8)
        e = u32(at) if compact else u64(at)
        if e == 0:
            break
        fixes.append((at, 4 if compact else 8))
        for k in range((u64(e + 8) - 64) // (4 if compact else 16)):
            fixes.append((e + 64 + k * (4 if compact else 16), 4 if compact else 8))
    arr = u64(arr + 16)
for at, w in fixes:
    fmt = "<I" if w == 4 else "<Q"
    v = struct.unpack_from(fmt, b, at)[0]
    if v:
        struct.pack_into(fmt, b, at, v - delta)
for field in (176, 136):
    struct.pack_into("<Q", b, field, u64(field) - delta)
struct.pack_into("<QQQQ", b, 104, 0, 0, 0, 0)  # no hash tables
struct.pack_into("<Q", b, 96, end - delta - hs)  # arena
open(sys.argv[2], "wb").write(b[:hs] + b[first:end])
EOF2
done
ls -l "$seeds"
