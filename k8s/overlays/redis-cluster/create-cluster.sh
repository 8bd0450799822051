#!/bin/sh
# Forms the Redis Cluster of StatefulSet chorus-redis-cluster, once; the Job
# chorus-redis-cluster-create runs it (redis:7-alpine: busybox sh and
# redis-cli). Safe to run again at any time:
#
#   every node healthy           -> "already formed", nothing is changed
#   every node empty (new pods)  -> redis-cli --cluster create over all of
#                                   them, --cluster-replicas 1, then waits
#                                   until every node is healthy
#   every node already in it,    -> CLUSTER MEET between every pair at their
#   but not healthy (e.g. all       current addresses (a node keeps its id
#   pods restarted with new IPs)    and slots in nodes.conf on its volume;
#                                   a MEET updates a known node's address),
#                                   then waits until every node is healthy
#   some formed, some empty      -> fails, naming the repair: a pod lost its
#   (a lost volume)                 volume; see k8s/README.md
#
# Healthy, as in scripts/redis-cluster.sh: cluster_state:ok, all 16384 slots
# served, every node known, and a replica's link to its primary up.
#
# Environment:
#   REDIS_CLUSTER_NODES  the nodes, "host:port host:port ..." (the pods'
#                        stable DNS names); at least 6: 3 primaries, each
#                        with one replica
#   WAIT_SECS            how long to wait for every node to answer, and again
#                        for the cluster to settle (default 300)
#
# A node's address for CLUSTER MEET and --cluster create is the IP it
# announces (its cluster-announce-ip, the pod IP), as Redis 7.0 takes IPs
# only there; without one, the host as given.
set -eu

NODES=${REDIS_CLUSTER_NODES:?set REDIS_CLUSTER_NODES to "host:port host:port ..."}
WAIT_SECS=${WAIT_SECS:-300}
SLOTS=16384

say() { echo "create-cluster: $*"; }
die() {
  echo "create-cluster: FAILED: $*" >&2
  exit 1
}

count=0
for node in $NODES; do
  case $node in
    *:*) count=$((count + 1)) ;;
    *) die "\"$node\" is not host:port" ;;
  esac
done
[ "$count" -ge 6 ] || die "$count nodes; --cluster-replicas 1 needs at least 6 (3 primaries)"

cli() { # cli HOST:PORT ARGS...
  cli_node=$1
  shift
  redis-cli -h "${cli_node%:*}" -p "${cli_node##*:}" "$@"
}

# The value of FIELD in the node's CLUSTER INFO (or INFO replication).
field() { # field HOST:PORT FIELD [INFO-SECTION]
  if [ $# -eq 3 ]; then
    cli "$1" info "$3" 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"
  else
    cli "$1" cluster info 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"
  fi
}

healthy() { # healthy HOST:PORT
  [ "$(field "$1" cluster_state)" = ok ] &&
    [ "$(field "$1" cluster_slots_ok)" = "$SLOTS" ] &&
    [ "$(field "$1" cluster_known_nodes)" = "$count" ] || return 1
  [ "$(field "$1" role replication)" = master ] ||
    [ "$(field "$1" master_link_status replication)" = up ]
}

# A node that belongs to a cluster knows another node or serves a slot.
formed() { # formed HOST:PORT
  [ "$(field "$1" cluster_known_nodes)" != 1 ] ||
    [ "$(field "$1" cluster_slots_assigned)" != 0 ]
}

# The address other nodes and redis-cli reach the node at: IP:PORT.
address() { # address HOST:PORT
  ip=$(cli "$1" config get cluster-announce-ip 2>/dev/null | tr -d '\r' | sed -n 2p)
  echo "${ip:-${1%:*}}:${1##*:}"
}

all_healthy() {
  for node in $NODES; do healthy "$node" || return 1; done
}

now() { date +%s; }

deadline=$(($(now) + WAIT_SECS))
for node in $NODES; do
  until [ "$(cli "$node" ping 2>/dev/null)" = PONG ]; do
    [ "$(now)" -lt "$deadline" ] || die "$node did not answer PING within ${WAIT_SECS}s"
    sleep 2
  done
  [ "$(field "$node" cluster_enabled cluster)" = 1 ] || die "$node does not run with cluster-enabled yes"
done
say "all $count nodes answer"

if all_healthy; then
  say "already formed: every node is healthy; nothing to do"
  exit 0
fi

in_cluster=0
for node in $NODES; do
  if formed "$node"; then in_cluster=$((in_cluster + 1)); fi
done

addresses=""
for node in $NODES; do addresses="$addresses $(address "$node")"; done

if [ "$in_cluster" -eq 0 ]; then
  say "every node is empty: creating the cluster over$addresses"
  # shellcheck disable=SC2086 # one argument per address
  redis-cli --cluster create $addresses --cluster-replicas 1 --cluster-yes ||
    die "redis-cli --cluster create failed (see above)"
elif [ "$in_cluster" -eq "$count" ]; then
  say "every node is in the cluster but not every one is healthy: introducing them again at$addresses"
  for node in $NODES; do
    own=$(address "$node")
    for peer in $addresses; do
      [ "$peer" != "$own" ] || continue
      cli "$node" cluster meet "${peer%:*}" "${peer##*:}" >/dev/null ||
        say "$node: CLUSTER MEET $peer failed (it may still come up)"
    done
  done
else
  for node in $NODES; do
    if ! formed "$node"; then say "$node is empty"; fi
  done
  die "$in_cluster of $count nodes are in a cluster, the others are empty (a pod lost its volume?): not created again. Repair by hand: redis-cli --cluster check, then del-node the lost node's old id and add-node the empty one as a replica (k8s/README.md)"
fi

deadline=$(($(now) + WAIT_SECS))
until all_healthy; do
  if [ "$(now)" -ge "$deadline" ]; then
    for node in $NODES; do
      if ! healthy "$node"; then
        say "$node: $(cli "$node" cluster info 2>/dev/null | tr -d '\r' | grep -E '^cluster_(state|slots_ok|known_nodes):' | tr '\n' ' ')"
      fi
    done
    die "the cluster was not healthy within ${WAIT_SECS}s"
  fi
  sleep 2
done
say "formed: every node is healthy"
