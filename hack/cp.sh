#!/usr/bin/env bash
# A real Kubernetes control plane on loopback for healer's e2e tests and benches.
#
# etcd, kube-apiserver, kube-controller-manager and kube-scheduler are upstream
# code built from Go modules (hack/etcd, hack/k8s); nodes are simulated by KWOK
# (hack/kwok), one kwok process per node, so a node's "kubelet" can be frozen
# with SIGSTOP: its heartbeats and Lease stop, node lifecycle marks it Unknown,
# taint eviction deletes its pods, and nobody finalises them: they stay
# Terminating, as on the real cluster when styx's kubelet died.
#
# Usage: hack/cp.sh VERB [ARGS]
#   build                 build the binaries into the cache (no-op when cached)
#   up                    (re)start the control plane on an empty etcd, plus a
#                         kwok per $CP_NODES; CA, token and kubeconfig are kept
#   down                  stop every process, even stopped ones; wipe etcd
#   status                show each process and the apiserver's readiness
#   env                   print `export KUBECONFIG=...`
#   add-node NAME         start a kwok "kubelet" for node NAME (create the Node
#                         object yourself; kwok only heartbeats it)
#   stop-kubelet NAME     SIGSTOP NAME's kwok: heartbeats and Lease stop
#   start-kubelet NAME    SIGCONT it: the node comes back Ready
#   notready NAME         node reports Ready=False while still heartbeating
#   ready NAME            undo notready
# A pod labelled kwok.test/stuck=true is never finalised: deleting it leaves it
# Terminating on a healthy node.
#
# Environment (defaults are upstream's, so timings are the real ones):
#   CP_CACHE (~/.cache/healer-cp)  CP_DIR (/tmp/healer-cp)  CP_NODES ("")
#   CP_APISERVER_PORT (6443) CP_ETCD_PORT (12379) CP_ETCD_PEER_PORT (12380)
#   CP_KCM_PORT (10257) CP_SCHEDULER_PORT (10259)
#   NODE_GRACE (50s) NODE_MONITOR_PERIOD (5s) TOLERATION_S (300) KWOK_LEASE_S (40)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# version MODULE DIR: the version of MODULE that hack/DIR/go.mod pins
version() {
	awk -v m="$1" '$1 == "require" { $0 = substr($0, 9) } $1 == m { sub(/^v/, "", $2); print $2; exit }' \
		"$HERE/$2/go.mod"
}
K8S_VERSION=$(version k8s.io/kubernetes k8s)
ETCD_VERSION=$(version go.etcd.io/etcd/server/v3 etcd)
KWOK_VERSION=$(version sigs.k8s.io/kwok kwok)

CP_CACHE=${CP_CACHE:-$HOME/.cache/healer-cp}
CP_DIR=${CP_DIR:-/tmp/healer-cp}
PKI=$CP_DIR/pki
KUBECONFIG_PATH=$CP_DIR/kubeconfig

APISERVER_PORT=${CP_APISERVER_PORT:-6443}
ETCD_PORT=${CP_ETCD_PORT:-12379}
ETCD_PEER_PORT=${CP_ETCD_PEER_PORT:-12380}
KCM_PORT=${CP_KCM_PORT:-10257}
SCHEDULER_PORT=${CP_SCHEDULER_PORT:-10259}
SERVICE_CIDR=10.43.0.0/16 # K3s' default, like the cluster we recreate

# Everything Go touches lives under the cache, so a warm machine rebuilds nothing;
# -mod=readonly makes CI fail instead of silently changing go.mod/go.sum.
export GOTOOLCHAIN=local CGO_ENABLED=0
export GOCACHE=$CP_CACHE/gocache GOMODCACHE=$CP_CACHE/gomod
export GOFLAGS="-mod=readonly -trimpath -buildvcs=false"

cache_key() {
	cat "$HERE"/{k8s,etcd,kwok}/go.{mod,sum} "$HERE"/k8s/cmd/*/main.go "$HERE"/etcd/main.go \
		"$HERE"/kwok/*.yaml <(go env GOVERSION) | sha256sum | cut -c1-16
}
BIN=$CP_CACHE/bin/k8s$K8S_VERSION-etcd$ETCD_VERSION-kwok$KWOK_VERSION-$(cache_key)

log() { echo "cp.sh: $*" >&2; }
die() { log "$*"; exit 1; }

build() {
	[[ -f $BIN/.complete ]] && return 0
	mkdir -p "$BIN"
	exec 9>"$BIN/.lock" # concurrent sessions: one builds, the others wait for it
	flock 9
	[[ -f $BIN/.complete ]] && return 0
	local minor=${K8S_VERSION#1.} ldflags="-s -w" pkg
	minor=${minor%%.*}
	# What upstream's hack/lib/version.sh stamps; without it /version says v0.0.0-master.
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
		ldflags+=" -X $pkg.gitTreeState=clean"
	done
	log "building kube-apiserver, kube-controller-manager, kube-scheduler v$K8S_VERSION"
	(cd "$HERE/k8s" && go build -p 2 -tags=selinux,notest,grpcnotrace -ldflags "$ldflags" -o "$BIN/" ./cmd/...)
	log "building etcd v$ETCD_VERSION"
	(cd "$HERE/etcd" && go build -p 2 -ldflags "-s -w" -o "$BIN/etcd" .)
	log "building kwok v$KWOK_VERSION"
	(cd "$HERE/kwok" && go build -p 2 -ldflags "-s -w" -o "$BIN/kwok" sigs.k8s.io/kwok/cmd/kwok)
	kwok_stages >"$BIN/kwok-stages.yaml"
	touch "$BIN/.complete"
	flock -u 9
}

# KWOK's own node and pod stages (a --config holding any stage of a kind replaces
# the built-in ones), plus the node-not-ready chaos stage and our pod-delete.
kwok_stages() {
	local dir stage
	dir=$(cd "$HERE/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)/kustomize/stage
	for stage in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
		node/chaos/node-not-ready pod/fast/pod-ready pod/fast/pod-complete; do
		cat "$dir/$stage.yaml"
		echo ---
	done
	cat "$HERE/kwok/pod-delete-unless-stuck.yaml"
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND until it succeeds.
wait_for() {
	local deadline=$((SECONDS + $1)) what=$2
	shift 2
	until "$@" &>/dev/null; do
		((SECONDS < deadline)) || die "timed out waiting for $what (logs: $CP_DIR/logs)"
		sleep 0.2
	done
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start NAME COMMAND...: run in its own session (a Ctrl-C aimed at the test
# runner must not kill it behind `down`'s back), log to logs/NAME.log.
start() {
	local name=$1
	shift
	setsid "$@" >"$CP_DIR/logs/$name.log" 2>&1 </dev/null &
	echo $! >"$CP_DIR/pids/$name"
}

pki() {
	mkdir -p "$PKI"
	(
		cd "$PKI"
		openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=healer-cp-ca \
			-keyout ca.key -out ca.crt 2>/dev/null
		openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver \
			-keyout apiserver.key -out apiserver.csr 2>/dev/null
		printf '%s\n' "subjectAltName=IP:127.0.0.1,IP:10.43.0.1,DNS:localhost,DNS:kubernetes.default.svc" \
			"extendedKeyUsage=serverAuth" >san.ext
		openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
			-extfile san.ext -out apiserver.crt 2>/dev/null
		openssl genrsa -out sa.key 2048 2>/dev/null
		openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
		echo "$(openssl rand -hex 24),admin,admin,system:masters" >tokens.csv
	)
	cat >"$KUBECONFIG_PATH" <<YAML
apiVersion: v1
kind: Config
clusters:
- name: healer-cp
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: admin
  user:
    token: $(cut -d, -f1 "$PKI/tokens.csv")
contexts:
- name: healer-cp
  context: {cluster: healer-cp, user: admin}
current-context: healer-cp
YAML
	chmod 600 "$KUBECONFIG_PATH"
}

up() {
	build
	down
	local port
	for port in "$APISERVER_PORT" "$ETCD_PORT" "$ETCD_PEER_PORT" "$KCM_PORT" "$SCHEDULER_PORT"; do
		port_free "$port" || die "port $port is in use; set CP_*_PORT (see hack/cp.sh header)"
	done
	mkdir -p "$CP_DIR"/{logs,pids,etcd}
	# Keep CA, token and kubeconfig across restarts: clients built before a reset stay valid.
	grep -qs "server: https://127.0.0.1:$APISERVER_PORT$" "$KUBECONFIG_PATH" && [[ -f $PKI/tokens.csv ]] || pki
	local token
	token=$(cut -d, -f1 "$PKI/tokens.csv")

	local etcd_url=http://127.0.0.1:$ETCD_PORT peer_url=http://127.0.0.1:$ETCD_PEER_PORT
	start etcd "$BIN/etcd" --name=cp --data-dir="$CP_DIR/etcd" --unsafe-no-fsync=true \
		--listen-client-urls="$etcd_url" --advertise-client-urls="$etcd_url" \
		--listen-peer-urls="$peer_url" --initial-advertise-peer-urls="$peer_url" \
		--initial-cluster="cp=$peer_url" --log-level=warn
	wait_for 30 etcd curl -fs "$etcd_url/health"

	# --advertise-address is only published (kubernetes Endpoints), never bound;
	# 127.0.0.1 is rejected there and a host without a default route has no
	# address to pick, so use a TEST-NET address.
	start kube-apiserver "$BIN/kube-apiserver" \
		--bind-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
		--advertise-address="${CP_ADVERTISE_IP:-192.0.2.10}" \
		--etcd-servers="$etcd_url" \
		--tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
		--client-ca-file="$PKI/ca.crt" --token-auth-file="$PKI/tokens.csv" \
		--service-account-issuer=https://kubernetes.default.svc.cluster.local \
		--service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
		--service-cluster-ip-range="$SERVICE_CIDR" \
		--authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
		--allow-privileged=true \
		--default-not-ready-toleration-seconds="${TOLERATION_S:-300}" \
		--default-unreachable-toleration-seconds="${TOLERATION_S:-300}"
	wait_for 120 kube-apiserver curl -fsk -H "Authorization: Bearer $token" \
		"https://127.0.0.1:$APISERVER_PORT/readyz"

	local common=(--kubeconfig="$KUBECONFIG_PATH" --authentication-kubeconfig="$KUBECONFIG_PATH"
		--authorization-kubeconfig="$KUBECONFIG_PATH" --bind-address=127.0.0.1 --leader-elect=false)
	start kube-controller-manager "$BIN/kube-controller-manager" "${common[@]}" \
		--secure-port="$KCM_PORT" --controllers='*' --use-service-account-credentials=true \
		--service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
		--cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
		--service-cluster-ip-range="$SERVICE_CIDR" --kube-api-qps=100 --kube-api-burst=200 \
		--node-monitor-period="${NODE_MONITOR_PERIOD:-5s}" \
		--node-monitor-grace-period="${NODE_GRACE:-50s}"
	start kube-scheduler "$BIN/kube-scheduler" "${common[@]}" --secure-port="$SCHEDULER_PORT"
	wait_for 60 kube-controller-manager curl -fsk "https://127.0.0.1:$KCM_PORT/healthz"
	wait_for 60 kube-scheduler curl -fsk "https://127.0.0.1:$SCHEDULER_PORT/healthz"

	local node
	for node in ${CP_NODES:-}; do add_node "$node"; done
	log "up; export KUBECONFIG=$KUBECONFIG_PATH"
}

# One kwok per node: freezing it freezes exactly that node's kubelet.
add_node() {
	local node=$1 n
	[[ $node =~ ^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$ ]] || die "bad node name: $node"
	[[ -f $CP_DIR/pids/kube-apiserver ]] || die "control plane is not up"
	[[ ! -f $CP_DIR/pids/kwok-$node ]] || die "node $node already has a kwok"
	n=$(find "$CP_DIR/pids" -name 'kwok-*' | wc -l)
	n=$((n + 1))
	start "kwok-$node" "$BIN/kwok" --kubeconfig="$KUBECONFIG_PATH" \
		--config="$BIN/kwok-stages.yaml" --manage-single-node="$node" \
		--node-lease-duration-seconds="${KWOK_LEASE_S:-40}" \
		--node-ip="10.41.0.$n" --cidr="10.42.$n.0/24"
}

kwok_pid() {
	local file=$CP_DIR/pids/kwok-$1
	[[ -f $file ]] || die "no kwok for node $1 (start one with: $0 add-node $1)"
	cat "$file"
}

# Our process? (guards against signalling a recycled pid)
ours() { [[ $(readlink "/proc/$1/exe" 2>/dev/null) == "$CP_CACHE"/bin/* ]]; }

down() {
	local name pid
	local kwoks=("$CP_DIR"/pids/kwok-*)
	[[ -e ${kwoks[0]} ]] || kwoks=()
	for name in "${kwoks[@]##*/}" kube-scheduler kube-controller-manager kube-apiserver etcd; do
		[[ -f $CP_DIR/pids/$name ]] || continue
		pid=$(cat "$CP_DIR/pids/$name")
		if ours "$pid"; then
			kill -CONT "$pid" 2>/dev/null || true # a stopped process cannot act on SIGTERM
			kill -TERM "$pid" 2>/dev/null || true
			for _ in {1..50}; do ours "$pid" || break; sleep 0.1; done
			! ours "$pid" || kill -KILL "$pid" 2>/dev/null || true
		fi
		rm -f "$CP_DIR/pids/$name"
	done
	rm -rf "$CP_DIR/etcd"
}

status() {
	local file name pid state
	for file in "$CP_DIR"/pids/*; do
		[[ -f $file ]] || continue
		name=${file##*/} pid=$(cat "$file")
		if ours "$pid"; then
			state=$(awk '{print $3}' "/proc/$pid/stat")
			[[ $state == T ]] && state=stopped || state=running
		else
			state=dead
		fi
		printf '%-26s %-8s %s\n' "$name" "$pid" "$state"
	done
	if curl -fsk -o /dev/null "https://127.0.0.1:$APISERVER_PORT/readyz"; then
		echo "apiserver ready: https://127.0.0.1:$APISERVER_PORT"
	else
		echo "apiserver not ready"
		return 1
	fi
}

verb=${1:-}
case $verb in
build) build ;;
up) up ;;
down) down ;;
status) status ;;
env) echo "export KUBECONFIG=$KUBECONFIG_PATH" ;;
add-node) add_node "${2:?node name}" ;;
stop-kubelet) kill -STOP "$(kwok_pid "${2:?node name}")" ;;
start-kubelet) kill -CONT "$(kwok_pid "${2:?node name}")" ;;
notready | ready)
	node=${2:?node name}
	value=$([[ $verb == notready ]] && echo '"true"' || echo null)
	# kwok's node-not-ready chaos stage: Ready=False on every heartbeat while set.
	curl -fsk -o /dev/null -X PATCH -H "Content-Type: application/merge-patch+json" \
		-H "Authorization: Bearer $(cut -d, -f1 "$PKI/tokens.csv")" \
		-d "{\"metadata\":{\"labels\":{\"node-not-ready.stage.kwok.x-k8s.io\":$value}}}" \
		"https://127.0.0.1:$APISERVER_PORT/api/v1/nodes/$node" || die "cannot label node $node"
	;;
*)
	sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
	;;
esac
