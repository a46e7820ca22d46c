#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this machine, for the cluster tests and benchmarks.
#
#   tests/cluster/rabbitmq-cluster.sh start              start (or complete) the cluster; quick when up
#   tests/cluster/rabbitmq-cluster.sh stop               stop all three nodes
#   tests/cluster/rabbitmq-cluster.sh status             exit 0 when all three run as one cluster
#   tests/cluster/rabbitmq-cluster.sh urls               the failover broker URL of all nodes
#   tests/cluster/rabbitmq-cluster.sh start-node b       start one node again (it rejoins by itself)
#   tests/cluster/rabbitmq-cluster.sh stop-node b        stop one node (its Erlang VM exits)
#
# Nodes rabbit-a@localhost, rabbit-b@localhost and rabbit-c@localhost listen for AMQP on
# 127.0.0.1:5701, 5702 and 5703 (Erlang distribution: 25701-25703), keep their data and logs in
# $ORDER_SYNC_CLUSTER_DIR (default /tmp/order-sync-rabbitmq-cluster), run no plugins, and share the
# Erlang cookie of the rabbitmq user with the main broker (rabbit@localhost, 5672), which this script
# never touches. Run as root (the nodes then run as the rabbitmq user) or as the rabbitmq user.
set -euo pipefail

BASE="${ORDER_SYNC_CLUSTER_DIR:-/tmp/order-sync-rabbitmq-cluster}"
NODES=(a b c)
declare -A AMQP_PORT=([a]=5701 [b]=5702 [c]=5703)
declare -A DIST_PORT=([a]=25701 [b]=25702 [c]=25703)
SEED=a
RABBITMQ_USER=rabbitmq

node_name() { printf 'rabbit-%s@localhost' "$1"; }

as_rabbitmq() {  # command...: run as the rabbitmq user, whose home holds the Erlang cookie
    if [[ $(id -un) == "$RABBITMQ_USER" ]]; then
        HOME="$(getent passwd "$RABBITMQ_USER" | cut -d: -f6)" "$@"
    elif [[ $(id -u) == 0 ]]; then
        local quoted
        printf -v quoted '%q ' "$@"
        su "$RABBITMQ_USER" -s /bin/sh -c "cd ~ && HOME=\$(pwd) $quoted"
    else
        echo "rabbitmq-cluster: run as root or as $RABBITMQ_USER" >&2
        return 1
    fi
}

ctl() {  # node command...: rabbitmqctl against one node of the cluster
    local node=$1
    shift
    as_rabbitmq /usr/lib/rabbitmq/bin/rabbitmqctl -q -n "$(node_name "$node")" "$@"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

prepare() {  # node: its folders, configuration and environment file
    local node=$1 dir="$BASE/$1"
    mkdir -p "$dir/mnesia" "$dir/log"
    printf '[].\n' >"$BASE/enabled_plugins"
    cat >"$dir/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:${AMQP_PORT[$node]}
# A message held unacknowledged longer than this closes its channel (the default, stated).
consumer_timeout = 1800000
EOF
    # Read instead of /etc/rabbitmq/rabbitmq-env.conf, which names the main broker's node.
    cat >"$dir/rabbitmq-env.conf" <<EOF
NODENAME=$(node_name "$node")
ERL_EPMD_ADDRESS=127.0.0.1
EOF
    if [[ $(id -u) == 0 ]]; then
        chown -R "$RABBITMQ_USER:" "$BASE"
    fi
}

node_env() {  # node: the environment that makes rabbitmq-server start this node
    local node=$1 dir="$BASE/$1"
    printf '%s\n' \
        "RABBITMQ_CONF_ENV_FILE=$dir/rabbitmq-env.conf" \
        "RABBITMQ_NODENAME=$(node_name "$node")" \
        "RABBITMQ_NODE_IP_ADDRESS=127.0.0.1" \
        "RABBITMQ_NODE_PORT=${AMQP_PORT[$node]}" \
        "RABBITMQ_DIST_PORT=${DIST_PORT[$node]}" \
        "RABBITMQ_MNESIA_BASE=$dir/mnesia" \
        "RABBITMQ_LOG_BASE=$dir/log" \
        "RABBITMQ_PID_FILE=$dir/rabbitmq.pid" \
        "RABBITMQ_CONFIG_FILE=$dir/rabbitmq.conf" \
        "RABBITMQ_ENABLED_PLUGINS_FILE=$BASE/enabled_plugins" \
        "ERL_EPMD_ADDRESS=127.0.0.1" \
        "ERL_FLAGS=-kernel inet_dist_use_interface {127,0,0,1}"
}

running() { ctl "$1" eval 'ok.' >/dev/null 2>&1; }

start_node() {
    local node=$1
    if running "$node"; then
        return 0
    fi
    prepare "$node"
    local env_args=()
    mapfile -t env_args < <(node_env "$node")
    as_rabbitmq env "${env_args[@]}" /usr/lib/rabbitmq/bin/rabbitmq-server -detached \
        >>"$BASE/$node/log/start.out" 2>&1
}

await_node() {
    local node=$1
    for _ in $(seq 1 120); do
        if ctl "$node" await_startup --timeout 5 >/dev/null 2>&1 && port_open "${AMQP_PORT[$node]}"; then
            return 0
        fi
        sleep 0.5
    done
    echo "rabbitmq-cluster: node $(node_name "$node") did not start; see $BASE/$node/log" >&2
    return 1
}

running_nodes() {  # the nodes node $1 sees running in its cluster, one a line
    ctl "$1" eval \
        'io:format("~s~n", [string:join([atom_to_list(N) || N <- rabbit_nodes:all_running()], " ")]).' \
        2>/dev/null | head -n 1 | tr ' ' '\n' | grep -v '^ok$' || true
}

clustered() {  # node: whether it runs in one cluster with all three
    local seen
    seen=$(running_nodes "$1" | sort | tr '\n' ' ')
    [[ $seen == "$(for n in "${NODES[@]}"; do node_name "$n"; echo; done | sort | tr '\n' ' ')" ]]
}

join() {  # node: join the seed's cluster (a fresh node; one that joined before rejoins by itself)
    local node=$1 members
    members=$(ctl "$node" eval 'io:format("~p~n", [rabbit_nodes:all()]).' 2>/dev/null | head -n 1)
    if [[ $members == *"$(node_name "$SEED")"* ]]; then
        return 0
    fi
    {
        ctl "$node" stop_app
        ctl "$node" reset
        ctl "$node" join_cluster "$(node_name "$SEED")"
        ctl "$node" start_app
    } >>"$BASE/$node/log/join.out" 2>&1
}

cmd_start() {
    if clustered "$SEED" 2>/dev/null; then
        echo "rabbitmq-cluster: up ($(cmd_urls))"
        return 0
    fi
    # All at once: a node that stopped last waits for its peers before it serves.
    for node in "${NODES[@]}"; do
        start_node "$node"
    done
    for node in "${NODES[@]}"; do
        await_node "$node"
    done
    for node in "${NODES[@]}"; do
        [[ $node == "$SEED" ]] || join "$node"
    done
    for _ in $(seq 1 60); do
        if clustered "$SEED"; then
            echo "rabbitmq-cluster: up ($(cmd_urls))"
            return 0
        fi
        sleep 0.5
    done
    echo "rabbitmq-cluster: the nodes run but do not form one cluster" >&2
    return 1
}

cmd_stop() {
    for node in "${NODES[@]}"; do
        if running "$node"; then
            ctl "$node" stop >/dev/null 2>&1 || true
        fi
    done
}

cmd_status() {
    local node ok=0
    for node in "${NODES[@]}"; do
        if running "$node"; then
            printf '%s running on 127.0.0.1:%s\n' "$(node_name "$node")" "${AMQP_PORT[$node]}"
        else
            printf '%s stopped\n' "$(node_name "$node")"
            ok=1
        fi
    done
    if ((ok == 0)) && clustered "$SEED"; then
        echo "one cluster of ${#NODES[@]} nodes"
        return 0
    fi
    return 1
}

cmd_urls() {
    local urls=() node
    for node in "${NODES[@]}"; do
        urls+=("amqp://guest:guest@127.0.0.1:${AMQP_PORT[$node]}//")
    done
    (IFS=';'; printf '%s\n' "${urls[*]}")
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    urls) cmd_urls ;;
    start-node)
        start_node "${2:?node: a, b or c}"
        await_node "$2"
        ;;
    stop-node) ctl "${2:?node: a, b or c}" stop ;;
    *)
        echo "usage: $0 start|stop|status|urls|start-node NODE|stop-node NODE" >&2
        exit 2
        ;;
esac
