# Sourced by fetch-crds.sh and fetch-kwok-stages.sh: copies files out of a Go
# module release into a cache directory.
#
# fetch_module_files DEST MODULE@VERSION SUBDIR FILE...
#   Downloads the module from the Go module proxy (checked against the Go
#   checksum database like any module) and installs each SUBDIR/FILE as
#   DEST/<basename of FILE>, unless all of them are there already. The
#   download runs outside any module, so no go.mod here changes.

_module_files_scratch=
_module_files_cleanup() { if [[ -n $_module_files_scratch ]]; then rm -rf "$_module_files_scratch"; fi; }
trap _module_files_cleanup EXIT

fetch_module_files() {
    local dest=$1 module_at=$2 subdir=$3
    shift 3
    local f missing=0
    for f in "$@"; do [[ -s $dest/$(basename "$f") ]] || missing=1; done
    if [[ $missing == 0 ]]; then return 0; fi

    if [[ -z $_module_files_scratch ]]; then _module_files_scratch=$(mktemp -d); fi
    local module_dir
    module_dir=$(cd "$_module_files_scratch" && GO111MODULE=on GOFLAGS=-mod=mod go mod download -json "$module_at" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    if [[ -z $module_dir || ! -d $module_dir ]]; then
        echo "phalanx-e2e: could not download $module_at" >&2
        return 1
    fi
    mkdir -p "$dest"
    local name
    for f in "$@"; do
        name=$(basename "$f")
        # A temporary name first, so an interrupted copy never looks finished.
        install -m 0644 "$module_dir/$subdir/$f" "$dest/.$name.tmp"
        mv -f "$dest/.$name.tmp" "$dest/$name"
    done
    echo "phalanx-e2e: files from $module_at in $dest" >&2
}
