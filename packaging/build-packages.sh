#!/usr/bin/env bash
# build-packages.sh: build the .deb and the .rpm of applianced into
# target/packages/, from the release binary (built with `cargo build
# --release` if it does not exist yet, or always with APPLIANCED_BUILD=1),
# the shared assets in packaging/, the Debian control files in deb/ and
# rpm/applianced.spec. Needs dpkg-deb, dpkg-shlibdeps (dpkg-dev) and
# rpmbuild; installs Debian's `rpm` and `dpkg-dev` packages when run as
# root and they are missing.
#
# Output: target/packages/applianced_<version>_<arch>.deb and
#         target/packages/applianced-<version>-1.<arch>.rpm, and the producer
#         library's packages (packaging/build-producer-packages.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
out=$repo/target/packages
binary=$repo/target/release/applianced

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ -n "$version" ] || { echo "build-packages: no version in Cargo.toml" >&2; exit 1; }
deb_arch=$(dpkg --print-architecture)
rpm_arch=$(uname -m)
# Reproducible timestamps: the last commit's, not the build's.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH
man_date=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)
rfc2822_date=$(date -u -R -d "@$SOURCE_DATE_EPOCH")

need_tool() { # command debian-package
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "build-packages: $1 is missing; install the Debian package $2" >&2
        exit 1
    fi
    echo "build-packages: installing $2 (for $1)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$2" >/dev/null ||
        { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$2" >/dev/null; }
}
need_tool dpkg-deb dpkg
need_tool dpkg-shlibdeps dpkg-dev
need_tool rpmbuild rpm
need_tool strip binutils

if [ ! -x "$binary" ] || [ "${APPLIANCED_BUILD:-0}" = 1 ]; then
    echo "build-packages: cargo build --release"
    cargo build --release --locked
fi
stale=$(find src sql Cargo.toml Cargo.lock -newer "$binary" -type f 2>/dev/null | head -n 3)
if [ -n "$stale" ]; then
    echo "build-packages: warning: $binary is older than:" $stale "(APPLIANCED_BUILD=1 rebuilds)" >&2
fi

rm -rf "$out"
mkdir -p "$out"
stage=$out/stage
root=$stage/deb

# ---- the files both packages install, laid out for Debian ------------------
# (the .rpm puts the units in /usr/lib/systemd/system instead of /lib/...)
install -d "$root/usr/bin" "$root/usr/libexec/applianced" "$root/lib/systemd/system" \
    "$root/usr/lib/sysusers.d" "$root/usr/lib/tmpfiles.d" "$root/etc/ransomeye" \
    "$root/usr/share/man/man8" "$root/usr/share/doc/applianced" "$root/usr/share/lintian/overrides"
# Debug info stays in target/; the package gets the stripped binary.
strip --strip-unneeded --remove-section=.comment --remove-section=.note \
    -o "$root/usr/bin/applianced" "$binary"
chmod 0755 "$root/usr/bin/applianced"
install -m 0755 packaging/applianced-setup "$root/usr/libexec/applianced/applianced-setup"
units=(applianced.service ransomeye.slice ransomeye-appliance.slice ransomeye-core.slice
    ransomeye-dpi.slice ransomeye-agents.slice)
for unit in "${units[@]}"; do
    install -m 0644 "packaging/$unit" "$root/lib/systemd/system/$unit"
done
install -m 0644 packaging/applianced.sysusers "$root/usr/lib/sysusers.d/applianced.conf"
install -m 0644 packaging/applianced.tmpfiles "$root/usr/lib/tmpfiles.d/applianced.conf"
install -m 0644 packaging/applianced.toml "$root/etc/ransomeye/applianced.toml"
packaging/render-manpage.sh "$root/usr/bin/applianced" "$version" "$man_date" > "$stage/applianced.8"
gzip -9n < "$stage/applianced.8" > "$root/usr/share/man/man8/applianced.8.gz"
install -m 0644 deb/copyright "$root/usr/share/doc/applianced/copyright"
install -m 0644 hardening/SYSTEMD.md "$root/usr/share/doc/applianced/SYSTEMD.md"
sed -e "s/@VERSION@/$version/" -e "s/@DATE_RFC2822@/$rfc2822_date/" deb/changelog |
    gzip -9n > "$root/usr/share/doc/applianced/changelog.gz"
install -m 0644 packaging/lintian-overrides "$root/usr/share/lintian/overrides/applianced"
chmod 0644 "$root/usr/share/man/man8/applianced.8.gz" "$root/usr/share/doc/applianced/changelog.gz"

# ---- .deb ------------------------------------------------------------------
install -d "$root/DEBIAN"
shlibs=$(cd "$stage" && mkdir -p debian && printf 'Source: applianced\n\nPackage: applianced\nArchitecture: any\n' > debian/control &&
    dpkg-shlibdeps -O "$root/usr/bin/applianced" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || { echo "build-packages: dpkg-shlibdeps found no library dependencies" >&2; exit 1; }
installed_kb=$(du -k -s --apparent-size "$root" --exclude=DEBIAN | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$deb_arch/" -e "s/@INSTALLED_SIZE@/$installed_kb/" \
    -e "s/@SHLIBS@/$shlibs/" deb/control > "$root/DEBIAN/control"
install -m 0644 deb/conffiles "$root/DEBIAN/conffiles"
for script in postinst prerm postrm; do
    install -m 0755 "deb/$script" "$root/DEBIAN/$script"
done
(cd "$root" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -print | sed 's|^\./||' | LC_ALL=C sort |
    xargs md5sum > DEBIAN/md5sums)
chmod 0644 "$root/DEBIAN/md5sums"
deb=$out/applianced_${version}_${deb_arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null

# ---- .rpm ------------------------------------------------------------------
topdir=$stage/rpmbuild
install -d "$topdir/SOURCES" "$topdir/SPECS"
cp -a "$root/usr/bin/applianced" packaging/applianced-setup packaging/applianced.sysusers \
    packaging/applianced.tmpfiles packaging/applianced.toml hardening/SYSTEMD.md deb/copyright \
    "$topdir/SOURCES/"
for unit in "${units[@]}"; do cp "packaging/$unit" "$topdir/SOURCES/"; done
gzip -9n < "$stage/applianced.8" > "$topdir/SOURCES/applianced.8.gz"
rpmbuild -bb --quiet --target "$rpm_arch" \
    --define "_topdir $topdir" \
    --define "pkg_version $version" \
    --define "_build_id_links none" \
    rpm/applianced.spec >"$stage/rpmbuild.log" 2>&1 || { cat "$stage/rpmbuild.log" >&2; exit 1; }
rpm_file=$(find "$topdir/RPMS" -name '*.rpm' | head -n 1)
mv "$rpm_file" "$out/"

rm -rf "$stage"
echo "build-packages: built"
ls -l "$out"/applianced*.deb "$out"/applianced*.rpm | awk '{ print "  " $5 " bytes  " $9 }'

# The producer library's packages (libransomeye-producer, -dev/-devel).
packaging/build-producer-packages.sh
