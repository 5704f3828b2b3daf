#!/usr/bin/env bash
# build-producer-packages.sh: the producer library's packages, beside the
# appliance's in target/packages/ (called by build-packages.sh):
#
#   libransomeye-producer_<v>_<arch>.deb       the shared library (soname libransomeye_producer.so.0)
#   libransomeye-producer-dev_<v>_<arch>.deb   header, the .so link, pkg-config file (module
#                                              ransomeye-producer), Python bindings, the examples
#   libransomeye-producer-<v>-1.<arch>.rpm, libransomeye-producer-devel-<v>-1.<arch>.rpm
#                                              the same for RPM-based hosts
#
# The Python bindings (`import ransomeye_producer`) are installed under
# /usr/share/ransomeye-producer/python; the .deb adds that directory to
# Debian's python3 path (a .pth file); the -devel .rpm's %post writes the same
# .pth into the installed python3's site-packages.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
out=$repo/target/packages
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' producer-c/Cargo.toml | head -n 1)
deb_arch=$(dpkg --print-architecture)
rpm_arch=$(uname -m)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo "$(uname -m)-linux-gnu")
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH

echo "build-producer-packages: cargo build --release -p ransomeye-producer"
cargo build --release --locked -p ransomeye-producer
library=$repo/target/release/libransomeye_producer.so
mkdir -p "$out"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

# ---- the files, laid out for Debian --------------------------------------
lib=$stage/lib
dev=$stage/dev
libdir=usr/lib/$multiarch
install -d "$lib/$libdir" "$lib/usr/share/doc/libransomeye-producer"
strip --strip-unneeded --remove-section=.comment -o "$lib/$libdir/libransomeye_producer.so.0" "$library"
chmod 0644 "$lib/$libdir/libransomeye_producer.so.0"
install -m 0644 deb/copyright "$lib/usr/share/doc/libransomeye-producer/copyright"

install -d "$dev/$libdir/pkgconfig" "$dev/usr/include" "$dev/usr/share/ransomeye-producer/python/ransomeye_producer" \
    "$dev/usr/share/doc/libransomeye-producer-dev/examples" "$dev/usr/lib/python3/dist-packages"
ln -s libransomeye_producer.so.0 "$dev/$libdir/libransomeye_producer.so"
install -m 0644 producer-c/include/ransomeye_producer.h "$dev/usr/include/ransomeye_producer.h"
sed -e "s|@PREFIX@|/usr|" -e "s|@MULTIARCH@|$multiarch|" -e "s|@VERSION@|$version|" \
    producer-c/ransomeye-producer.pc.in > "$dev/$libdir/pkgconfig/ransomeye-producer.pc"
install -m 0644 python/ransomeye_producer/__init__.py "$dev/usr/share/ransomeye-producer/python/ransomeye_producer/"
echo /usr/share/ransomeye-producer/python > "$dev/usr/lib/python3/dist-packages/ransomeye_producer.pth"
install -m 0644 examples/c/send_events.c examples/python/send_events.py producer-c/README.md \
    "$dev/usr/share/doc/libransomeye-producer-dev/examples/"
install -m 0644 deb/copyright "$dev/usr/share/doc/libransomeye-producer-dev/copyright"
# Debian policy: a changelog per package; the library's shlibs; the
# package names the issue fixed (not libransomeye-producer0) as an override.
rfc2822_date=$(date -u -R -d "@$SOURCE_DATE_EPOCH")
for pair in "$lib=libransomeye-producer" "$dev=libransomeye-producer-dev"; do
    printf '%s\n' "applianced ($version) unstable; urgency=medium" "" \
        "  * The RansomEye producer library: C ABI, header, pkg-config file," \
        "    Python bindings and example modules." "" \
        " -- RansomEye maintainers <maintainers@ransomeye.invalid>  $rfc2822_date" |
        gzip -9n > "${pair%%=*}/usr/share/doc/${pair#*=}/changelog.gz"
    chmod 0644 "${pair%%=*}/usr/share/doc/${pair#*=}/changelog.gz"
done
install -d "$lib/usr/share/lintian/overrides"
echo "libransomeye-producer: package-name-doesnt-match-sonames libransomeye-producer0" \
    > "$lib/usr/share/lintian/overrides/libransomeye-producer"
chmod 0644 "$lib/usr/share/lintian/overrides/libransomeye-producer"

# ---- .deb ----------------------------------------------------------------
control() { # dir package depends description-line
    install -d "$1/DEBIAN"
    local size
    size=$(du -k -s --apparent-size "$1" --exclude=DEBIAN | cut -f1)
    cat > "$1/DEBIAN/control" <<EOF
Package: $2
Source: applianced
Version: $version
Architecture: $deb_arch
Maintainer: RansomEye maintainers <maintainers@ransomeye.invalid>
Installed-Size: $size
Depends: $3
Section: libs
Priority: optional
Multi-Arch: same
Description: $4
 The RansomEye producer library sends a module's events to its lane of an
 applianced appliance: mutual SO_PEERCRED check, handshake, credit, ACK,
 resend after a reconnect, events checked as the lane checks them.
EOF
    (cd "$1" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | LC_ALL=C sort |
        xargs md5sum > DEBIAN/md5sums)
    chmod 0644 "$1/DEBIAN/md5sums"
}
libc_dep=$(dpkg -s libc6 2>/dev/null | sed -n 's/^Version: \([0-9.]*\).*/libc6 (>= \1)/p')
control "$lib" libransomeye-producer "${libc_dep:-libc6}" "RansomEye producer library (shared library)"
echo "activate-noawait ldconfig" > "$lib/DEBIAN/triggers"
echo "libransomeye_producer 0 libransomeye-producer (>= $version)" > "$lib/DEBIAN/shlibs"
chmod 0644 "$lib/DEBIAN/shlibs" "$lib/DEBIAN/triggers"
control "$dev" libransomeye-producer-dev "libransomeye-producer (= $version), python3" \
    "RansomEye producer library (C header, pkg-config, Python bindings, examples)"
sed -i 's/^Section: libs/Section: libdevel/' "$dev/DEBIAN/control"
dpkg-deb --root-owner-group -Zxz --build "$lib" "$out/libransomeye-producer_${version}_${deb_arch}.deb" >/dev/null
dpkg-deb --root-owner-group -Zxz --build "$dev" "$out/libransomeye-producer-dev_${version}_${deb_arch}.deb" >/dev/null

# ---- .rpm ----------------------------------------------------------------
topdir=$stage/rpmbuild
install -d "$topdir/SOURCES"
cp "$lib/$libdir/libransomeye_producer.so.0" producer-c/include/ransomeye_producer.h \
    python/ransomeye_producer/__init__.py examples/c/send_events.c examples/python/send_events.py \
    producer-c/README.md deb/copyright "$topdir/SOURCES/"
sed -e "s|@PREFIX@|/usr|" -e "s|lib/@MULTIARCH@|lib64|" -e "s|@VERSION@|$version|" \
    producer-c/ransomeye-producer.pc.in > "$topdir/SOURCES/ransomeye-producer.pc"
rpmbuild -bb --quiet --target "$rpm_arch" \
    --define "_topdir $topdir" \
    --define "pkg_version $version" \
    --define "_build_id_links none" \
    rpm/libransomeye-producer.spec >"$stage/rpmbuild.log" 2>&1 || { cat "$stage/rpmbuild.log" >&2; exit 1; }
find "$topdir/RPMS" -name '*.rpm' -exec mv {} "$out/" \;
echo "build-producer-packages: built"
ls -l "$out"/libransomeye-producer* | awk '{ print "  " $5 " bytes  " $9 }'
