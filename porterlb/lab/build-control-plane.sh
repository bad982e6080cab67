#!/usr/bin/env bash
# Build kube-apiserver and etcd from the Go module proxy into a version-keyed cache.
#
# Why a wrapper module: k8s.io/kubernetes maps its staging modules to ./staging with
# `replace` lines, which Go ignores in a dependency, so every staging module is replaced
# here by its published v0.<minor>.<patch> tag (kubernetes/kubernetes#79384).
# Prints the directory holding the two binaries. Rebuilds only what is missing.
set -euo pipefail

K8S_VERSION="${PORTERLB_K8S_VERSION:?set by porterlb.lab.binaries}"
CACHE="${PORTERLB_CACHE:-$HOME/.cache/porterlb}"
OUT="$CACHE/bin/kubernetes-$K8S_VERSION"
SRC="$CACHE/src/kubernetes-$K8S_VERSION"

if [[ -x "$OUT/kube-apiserver" && -x "$OUT/etcd" ]]; then
  echo "$OUT"
  exit 0
fi

export GOFLAGS=-mod=mod
export CGO_ENABLED=0
mkdir -p "$SRC/cmd/kube-apiserver" "$SRC/cmd/etcd" "$OUT"
cd "$SRC"

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

cat > cmd/kube-apiserver/main.go <<'GO'
package main

import (
	"os"
	_ "time/tzdata"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() { os.Exit(cli.Run(app.NewAPIServerCommand())) }
GO

cat > cmd/etcd/main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO

go mod tidy
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
go build -trimpath -ldflags "$ldflags" -o "$OUT/kube-apiserver.tmp" ./cmd/kube-apiserver
go build -trimpath -ldflags "-s -w" -o "$OUT/etcd.tmp" ./cmd/etcd
mv "$OUT/kube-apiserver.tmp" "$OUT/kube-apiserver"
mv "$OUT/etcd.tmp" "$OUT/etcd"
echo "$OUT"
