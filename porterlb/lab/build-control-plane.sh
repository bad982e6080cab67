#!/usr/bin/env bash
# Build Kubernetes binaries from the Go module proxy into a version-keyed cache.
#
# Usage: build-control-plane.sh BINARY...   (kube-apiserver etcd kubelet kube-proxy
#        kube-controller-manager kube-scheduler). Rebuilds only what is missing.
#
# Why a wrapper module: k8s.io/kubernetes maps its staging modules to ./staging with
# `replace` lines, which Go ignores in a dependency, so every staging module is replaced
# here by its published v0.<minor>.<patch> tag (kubernetes/kubernetes#79384).
# Prints one progress line per binary built, then the directory holding the binaries; the
# Go toolchain's own output goes to build.log in that directory's cache (see LOG below).
set -euo pipefail

K8S_VERSION="${PORTERLB_K8S_VERSION:?set by porterlb.lab.binaries}"
CACHE="${PORTERLB_CACHE:-$HOME/.cache/porterlb}"
OUT="$CACHE/bin/kubernetes-$K8S_VERSION"
SRC="$CACHE/src/kubernetes-$K8S_VERSION"
LOG="$SRC/build.log"

missing=()
for binary in "$@"; do
  [[ -x "$OUT/$binary" ]] || missing+=("$binary")
done
if ((${#missing[@]} == 0)); then
  echo "$OUT"
  exit 0
fi

export GOFLAGS=-mod=mod
export CGO_ENABLED=0
mkdir -p "$SRC/cmd" "$OUT"
cd "$SRC"
: >>"$LOG"

gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
godirective=$(awk '$1 == "go" { print $2; exit }' "$gomod")
minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
patch=${K8S_VERSION##*.}

cat > go.mod <<GOMOD
module porterlb.invalid/controlplane

go $godirective
GOMOD
go mod edit -require "k8s.io/kubernetes@$K8S_VERSION"
# Every staging module, read from the exact version's go.mod rather than a hard-coded list.
for mod in $(awk '$2 == "v0.0.0" && $1 ~ /^k8s\.io\// { print $1 }' "$gomod" | sort -u); do
  go mod edit -replace "$mod=$mod@v0.$minor.$patch"
done

# The Kubernetes commands' main packages, as upstream's cmd/NAME/NAME.go has them (a main
# package cannot be imported, so the wrapper module carries its own copy of each).
component_main() {  # NAME CALL [IMPORT...]: main() runs app.CALL
  local name=$1 call=$2 imp
  shift 2
  mkdir -p "cmd/$name"
  {
    printf 'package main\n\nimport (\n'
    for imp in "$@" os k8s.io/component-base/cli "k8s.io/kubernetes/cmd/$name/app"; do
      printf '\t"%s"\n' "$imp"
    done
    for imp in time/tzdata k8s.io/component-base/logs/json/register \
      k8s.io/component-base/metrics/prometheus/clientgo k8s.io/component-base/metrics/prometheus/version; do
      printf '\t_ "%s"\n' "$imp"
    done
    printf ')\n\nfunc main() { os.Exit(cli.Run(app.%s)) }\n' "$call"
  } >"cmd/$name/main.go"
}
component_main kube-apiserver 'NewAPIServerCommand()'
component_main kubelet 'NewKubeletCommand(context.Background())' context
component_main kube-proxy 'NewProxyCommand()'
component_main kube-controller-manager 'NewControllerManagerCommand()'
component_main kube-scheduler 'NewSchedulerCommand()'
mkdir -p cmd/etcd
cat > cmd/etcd/main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO

go mod tidy >>"$LOG" 2>&1
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
for binary in "${missing[@]}"; do
  started=$SECONDS
  flags=$ldflags
  [[ $binary == etcd ]] && flags="-s -w"
  if ! go build -trimpath -ldflags "$flags" -o "$OUT/$binary.tmp" "./cmd/$binary" >>"$LOG" 2>&1; then
    echo "building $binary failed: see $LOG" >&2
    exit 1
  fi
  mv "$OUT/$binary.tmp" "$OUT/$binary"
  echo "built $binary in $((SECONDS - started)) s" >&2
done
echo "$OUT"
