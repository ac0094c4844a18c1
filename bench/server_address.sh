# Sourced by the benchmark shell scripts: waiting for a server started with `--port 0` to say
# where it listens (the last word of its first line, as ours and the peers in bench/ print it).

# await_address OUTPUT PID [LOG...]: prints the address the server writing OUTPUT printed. If it
# prints none within 10 s, shows OUTPUT and the LOGs on stderr, kills PID and fails.
await_address() {
    local output=$1 pid=$2 addr=""
    shift 2
    for _ in $(seq 100); do
        addr=$(head -n1 "$output" 2>/dev/null | awk '{print $NF}')
        if [ -n "$addr" ]; then
            echo "$addr"
            return 0
        fi
        sleep 0.1
    done
    echo "the server printed no address; its output:" >&2
    cat "$output" "$@" >&2
    kill "$pid" 2>/dev/null
    return 1
}
