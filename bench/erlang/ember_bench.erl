%% BEAM side of the Ember side-by-side benchmarks.
%%
%% Invoked by bench/run once per scenario per run, in a fresh VM:
%%
%%   erl -noshell +P 2000000 -pa DIR -eval 'ember_bench:main(["ring"])'
%%
%% Protocol (shared with the Rust side, target/release/ember-bench):
%%   * `main(["--list"])` prints one `SCENARIO <name>` line per scenario.
%%   * `main([Name])` runs that scenario and prints one line per metric,
%%     `METRIC <name> <value> <unit>`, on stdout. Other lines are ignored
%%     by the driver (informational lines start with `#`).
%%   * Exit status 0 on success, 1 if the scenario failed, 2 on an
%%     unknown scenario or bad arguments.
%%
%% What every scenario must do, precisely, is written down in
%% bench/README.md ("Writing the Ember side"); keep the two in sync.
%% To add a scenario: add a {Name, Fun} entry to scenarios/0 here, the
%% same scenario to the Rust side, and a paragraph to the README.
-module(ember_bench).

-export([main/1, scenarios/0]).

%% spawn
-define(SPAWN_N, 1000000).
%% pingpong
-define(PINGPONG_N, 1000000).
%% ring
-define(RING_SIZE, 10000).
-define(RING_HOPS, 1000000).
%% fanin
-define(FANIN_SENDERS, 100).
-define(FANIN_PER_SENDER, 100000).
%% timers
-define(TIMER_PROCS, 1000).
-define(TIMERS_PER_PROC, 1000).
-define(TIMER_FIRE_SPREAD_MS, 100).    % fire run: delays 1..100 ms
-define(TIMER_CANCEL_BASE_MS, 3000).   % cancel run: delays 3000..3999 ms
-define(TIMER_CANCEL_SPREAD_MS, 1000). % (< 5 s: stays in BEAM's timer wheel)
%% wake
-define(WAKE_ROUNDS, 2000).
-define(WAKE_WARMUP, 100).
-define(WAKE_BUSY_NS, 200000).         % the sender's busy time after a send
-define(WAKE_GAP_MS, 2).               % then everything sleeps

%% ---------------------------------------------------------------------
%% Entry point
%% ---------------------------------------------------------------------

scenarios() ->
    [{"spawn", fun spawn_scenario/0},
     {"pingpong", fun pingpong_scenario/0},
     {"ring", fun ring_scenario/0},
     {"fanin", fun fanin_scenario/0},
     {"timers", fun timers_scenario/0},
     {"wake", fun wake_scenario/0},
     {"responsiveness", fun ember_bench_responsiveness:scenario/0},
     {"genserver_call", fun ember_bench_otp:genserver_call/0},
     {"supervisor_restart", fun ember_bench_otp:supervisor_restart/0}].

main(Args) ->
    Status =
        try run(normalize(Args))
        catch
            Class:Reason:Stack ->
                io:format(standard_error, "ember_bench: ~p:~p~n~p~n",
                          [Class, Reason, Stack]),
                1
        end,
    erlang:halt(Status).

normalize(Args) ->
    [if is_atom(A) -> atom_to_list(A); true -> A end || A <- Args].

run(["--list"]) ->
    print_info(),
    [io:format("SCENARIO ~s~n", [Name]) || {Name, _} <- scenarios()],
    0;
run([Name]) ->
    case lists:keyfind(Name, 1, scenarios()) of
        {Name, Fun} ->
            print_info(),
            Metrics = isolated(Fun),
            [io:format("METRIC ~s ~s ~s~n", [M, fmt(V), U]) || {M, V, U} <- Metrics],
            0;
        false ->
            io:format(standard_error, "ember_bench: unknown scenario ~p (known: ~s)~n",
                      [Name, string:join([N || {N, _} <- scenarios()], ", ")]),
            2
    end;
run(Other) ->
    io:format(standard_error, "usage: ember_bench:main([Scenario | \"--list\"]), got ~p~n",
              [Other]),
    2.

print_info() ->
    io:format("# beam otp=~s erts=~s schedulers=~p/~p process_limit=~p~n",
              [erlang:system_info(otp_release),
               erlang:system_info(version),
               erlang:system_info(schedulers_online),
               erlang:system_info(schedulers),
               erlang:system_info(process_limit)]).

%% Run a scenario in a fresh process (clean heap and mailbox, not the
%% init/eval process) and hand its result back.
isolated(Fun) ->
    {Pid, Ref} = spawn_monitor(fun() -> exit({bench_result, Fun()}) end),
    receive
        {'DOWN', Ref, process, Pid, {bench_result, Metrics}} -> Metrics;
        {'DOWN', Ref, process, Pid, Reason} -> error({scenario_crashed, Reason})
    end.

fmt(V) when is_integer(V) -> integer_to_list(V);
fmt(V) when is_float(V) -> float_to_list(V, [{decimals, 3}, compact]).

now_native() -> erlang:monotonic_time().

ns(T0, T1) -> erlang:convert_time_unit(T1 - T0, native, nanosecond).

%% ---------------------------------------------------------------------
%% spawn: 1,000,000 processes parked in receive; spawn / memory / kill
%% ---------------------------------------------------------------------

spawn_scenario() ->
    _ = spawn_round(10000),                          % warm-up
    {SpawnNs, KillNs, Bytes, RssBytes} = spawn_round(?SPAWN_N),
    [{"spawn_us_per_process", SpawnNs / 1000 / ?SPAWN_N, "us"},
     {"spawn_bytes_per_process", Bytes / ?SPAWN_N, "bytes"},
     {"spawn_rss_bytes_per_process", RssBytes / ?SPAWN_N, "bytes"},
     {"spawn_kill_us_per_process", KillNs / 1000 / ?SPAWN_N, "us"}].

spawn_round(N) ->
    Base = erlang:system_info(process_count),
    erlang:garbage_collect(),
    {memory, Self0} = process_info(self(), memory),
    Mem0 = erlang:memory(total),
    Rss0 = rss_bytes(),
    T0 = now_native(),
    Pids = spawn_waiters(N, []),
    T1 = now_native(),
    %% Barrier (not timed): every process must have run up to its receive.
    ok = await_all_waiting(Pids),
    %% Exclude our own heap (it holds the list of N pids) from the delta.
    erlang:garbage_collect(),
    {memory, Self1} = process_info(self(), memory),
    Mem1 = erlang:memory(total),
    Rss1 = rss_bytes(),
    T2 = now_native(),
    lists:foreach(fun(P) -> exit(P, kill) end, Pids),
    TLoop = now_native(),
    ok = await_process_count(Base),
    T3 = now_native(),
    io:format("# spawn_kill n=~p: kill loop ~.3f us/process, then ~.1f ms until the "
              "count fell~n", [N, ns(T2, TLoop) / 1000 / N, ns(TLoop, T3) / 1.0e6]),
    {ns(T0, T1), ns(T2, T3), (Mem1 - Mem0) - (Self1 - Self0), Rss1 - Rss0}.

spawn_waiters(0, Acc) -> Acc;
spawn_waiters(N, Acc) -> spawn_waiters(N - 1, [spawn(fun waiter/0) | Acc]).

waiter() ->
    receive _ -> ok end.

%% First wait until no process but us is runnable (cheap), then confirm
%% process by process that each one is suspended in receive.
await_all_waiting(Pids) ->
    ok = await_quiescent(),
    lists:foreach(fun await_waiting/1, Pids).

await_waiting(P) ->
    case process_info(P, status) of
        {status, waiting} -> ok;
        {status, _} -> erlang:yield(), await_waiting(P);
        undefined -> error({process_died, P})
    end.

%% No process or port other than the caller is running or runnable.
await_quiescent() ->
    case erlang:statistics(total_active_tasks_all) of
        N when N =< 1 -> ok;
        _ -> receive after 1 -> await_quiescent() end
    end.

await_process_count(Base) ->
    case erlang:system_info(process_count) of
        N when N =< Base -> ok;
        _ -> receive after 1 -> await_process_count(Base) end
    end.

rss_bytes() ->
    {ok, Status} = file:read_file("/proc/self/status"),
    [_, Rest] = binary:split(Status, <<"VmRSS:">>),
    [Kb | _] = string:lexemes(Rest, " \t\n"),
    binary_to_integer(Kb) * 1024.

%% ---------------------------------------------------------------------
%% pingpong: 1,000,000 request/reply round trips between two processes
%% ---------------------------------------------------------------------

pingpong_scenario() ->
    Parent = self(),
    Pong = spawn_link(fun pong/0),
    Ping = spawn_link(
             fun() ->
                     ok = ping(10000, Pong),         % warm-up
                     T0 = now_native(),
                     ok = ping(?PINGPONG_N, Pong),
                     T1 = now_native(),
                     Parent ! {self(), ns(T0, T1)}
             end),
    Ns = receive {Ping, Elapsed} -> Elapsed end,
    Pong ! stop,
    [{"pingpong_ns_per_roundtrip", Ns / ?PINGPONG_N, "ns"}].

ping(0, _Pong) -> ok;
ping(N, Pong) ->
    Pong ! {ping, self()},
    receive pong -> ping(N - 1, Pong) end.

pong() ->
    receive
        {ping, From} -> From ! pong, pong();
        stop -> ok
    end.

%% ---------------------------------------------------------------------
%% ring: 10,000 processes, a token makes 100 laps (1,000,000 hops)
%% ---------------------------------------------------------------------

ring_scenario() ->
    Self = self(),
    %% Warm-up: build a throwaway ring of the same size, run one lap, and
    %% tear it down (wait until its processes are gone).
    Base = erlang:system_info(process_count),
    Warm = build_ring(?RING_SIZE, Self),
    Warm ! ?RING_SIZE,
    receive ring_done -> ok end,
    Warm ! stop,
    ok = await_process_count(Base),
    T0 = now_native(),
    First = build_ring(?RING_SIZE, Self),
    T1 = now_native(),
    First ! ?RING_SIZE,                        % one untimed lap on this ring
    receive ring_done -> ok end,
    T2 = now_native(),
    First ! ?RING_HOPS,
    receive ring_done -> ok end,
    T3 = now_native(),
    First ! stop,
    [{"ring_ns_per_hop", ns(T2, T3) / ?RING_HOPS, "ns"},
     {"ring_build_us_per_process", ns(T0, T1) / 1000 / ?RING_SIZE, "us"}].

%% Spawn N relays, each linked to the previously spawned one, then close
%% the ring by telling the first-spawned (last in the chain) its successor.
build_ring(N, Coord) ->
    Last = spawn(fun() -> receive {next, Next} -> relay(Next, Coord) end end),
    First = build_chain(N - 1, Last, Coord),
    Last ! {next, First},
    First.

build_chain(0, Next, _Coord) -> Next;
build_chain(N, Next, Coord) ->
    build_chain(N - 1, spawn(fun() -> relay(Next, Coord) end), Coord).

%% Token = number of hops still to make. The process that receives 0
%% reports to the coordinator.
relay(Next, Coord) ->
    receive
        0 -> Coord ! ring_done, relay(Next, Coord);
        K when is_integer(K) -> Next ! K - 1, relay(Next, Coord);
        stop -> Next ! stop
    end.

%% ---------------------------------------------------------------------
%% fanin: 100 senders x 100,000 messages into one receiver
%% ---------------------------------------------------------------------

fanin_scenario() ->
    _ = fanin_round(?FANIN_SENDERS, 1000),             % warm-up
    Ns = fanin_round(?FANIN_SENDERS, ?FANIN_PER_SENDER),
    Total = ?FANIN_SENDERS * ?FANIN_PER_SENDER,
    [{"fanin_msgs_per_s", Total / (Ns / 1.0e9), "msgs/s"}].

fanin_round(Senders, PerSender) ->
    Self = self(),
    Total = Senders * PerSender,
    Recv = spawn_link(fun() -> ok = count(Total), Self ! {fanin_done, self()} end),
    Pids = [spawn_link(fun() -> receive go -> send_n(PerSender, Recv) end end)
            || _ <- lists:seq(1, Senders)],
    ok = await_quiescent(),                            % all parked in receive
    T0 = now_native(),
    lists:foreach(fun(P) -> P ! go end, Pids),
    receive {fanin_done, Recv} -> ok end,
    T1 = now_native(),
    ns(T0, T1).

count(0) -> ok;
count(N) -> receive _ -> count(N - 1) end.

send_n(0, _To) -> ok;
send_n(N, To) -> To ! msg, send_n(N - 1, To).

%% ---------------------------------------------------------------------
%% timers: 1,000 processes x 1,000 timers
%% ---------------------------------------------------------------------

%% ---------------------------------------------------------------------
%% wake: the wake-up of an idle process from another scheduler. The
%% receiver waits in `receive` while every scheduler sleeps; the sender
%% sends it the current time and keeps its own scheduler busy for 200 us,
%% then everything sleeps 2 ms. The latency is from the send to the
%% receiver running.
%% ---------------------------------------------------------------------

wake_scenario() ->
    Self = self(),
    Receiver = spawn(fun() -> wake_receiver(Self, []) end),
    wake_rounds(Receiver, ?WAKE_WARMUP + ?WAKE_ROUNDS),
    Receiver ! report,
    Samples = receive {wake_samples, S} -> S end,
    Measured = lists:nthtail(?WAKE_WARMUP, Samples),
    Us = lists:sort([Ns / 1000 || Ns <- Measured]),
    [{"wake_p50_us", wake_at(Us, 0.50), "us"},
     {"wake_p99_us", wake_at(Us, 0.99), "us"}].

wake_receiver(Coordinator, Acc) ->
    receive
        {wake, T0} ->
            Now = erlang:monotonic_time(nanosecond),
            wake_receiver(Coordinator, [Now - T0 | Acc]);
        report ->
            Coordinator ! {wake_samples, lists:reverse(Acc)}
    end.

wake_rounds(_Receiver, 0) ->
    ok;
wake_rounds(Receiver, K) ->
    T0 = erlang:monotonic_time(nanosecond),
    Receiver ! {wake, T0},
    wake_busy_until(T0 + ?WAKE_BUSY_NS),
    receive after ?WAKE_GAP_MS -> ok end,
    wake_rounds(Receiver, K - 1).

wake_busy_until(T) ->
    case erlang:monotonic_time(nanosecond) < T of
        true -> wake_busy_until(T);
        false -> ok
    end.

wake_at(Sorted, Q) ->
    Len = length(Sorted),
    lists:nth(min(trunc(Len * Q), Len - 1) + 1, Sorted).

timers_scenario() ->
    _ = timers_fire_round(10, ?TIMERS_PER_PROC),       % warm-up
    _ = timers_cancel_round(10, ?TIMERS_PER_PROC),
    FireNs = timers_fire_round(?TIMER_PROCS, ?TIMERS_PER_PROC),
    {ArmNs, CancelNs} = timers_cancel_round(?TIMER_PROCS, ?TIMERS_PER_PROC),
    Total = ?TIMER_PROCS * ?TIMERS_PER_PROC,
    [{"timers_ns_per_timer", FireNs / Total, "ns"},
     {"timers_arm_ns_per_timer", ArmNs / Total, "ns"},
     {"timers_cancel_ns_per_timer", CancelNs / Total, "ns"}].

%% Each process arms PerProc timers (delay 1 + I rem 100 ms) to itself,
%% then receives all of them. Elapsed: go -> last process done.
timers_fire_round(Procs, PerProc) ->
    Self = self(),
    Pids = [spawn_link(fun() ->
                               receive go -> ok end,
                               ok = arm_fire(0, PerProc),
                               ok = await_timeouts(PerProc),
                               Self ! {timers_done, self()}
                       end) || _ <- lists:seq(1, Procs)],
    ok = await_quiescent(),
    T0 = now_native(),
    lists:foreach(fun(P) -> P ! go end, Pids),
    _ = collect(Procs, timers_done, 0),
    T1 = now_native(),
    ns(T0, T1).

arm_fire(N, N) -> ok;
arm_fire(I, N) ->
    _ = erlang:send_after(1 + I rem ?TIMER_FIRE_SPREAD_MS, self(), timeout),
    arm_fire(I + 1, N).

await_timeouts(0) -> ok;
await_timeouts(N) -> receive timeout -> await_timeouts(N - 1) end.

%% Each process arms PerProc timers that would fire 3-4 s later, reports
%% armed, waits for the signal, then cancels every one of them.
%% Returns {go -> all armed, go -> all cancelled}.
timers_cancel_round(Procs, PerProc) ->
    Self = self(),
    Pids = [spawn_link(fun() ->
                               receive go -> ok end,
                               Refs = arm_cancelable(0, PerProc, []),
                               Self ! {timers_armed, self()},
                               receive cancel -> ok end,
                               Fired = cancel_all(Refs, 0),
                               Self ! {timers_cancelled, Fired}
                       end) || _ <- lists:seq(1, Procs)],
    ok = await_quiescent(),
    T0 = now_native(),
    lists:foreach(fun(P) -> P ! go end, Pids),
    _ = collect(Procs, timers_armed, 0),
    T1 = now_native(),
    lists:foreach(fun(P) -> P ! cancel end, Pids),
    Fired = collect(Procs, timers_cancelled, 0),
    T2 = now_native(),
    Fired > 0 andalso
        io:format("# warning: ~p timers fired before they were cancelled~n", [Fired]),
    {ns(T0, T1), ns(T0, T2)}.

arm_cancelable(N, N, Acc) -> Acc;
arm_cancelable(I, N, Acc) ->
    Delay = ?TIMER_CANCEL_BASE_MS + I rem ?TIMER_CANCEL_SPREAD_MS,
    arm_cancelable(I + 1, N, [erlang:send_after(Delay, self(), timeout) | Acc]).

%% Returns how many had already fired (should be 0: they are 3-4 s out).
cancel_all([], Fired) -> Fired;
cancel_all([Ref | Refs], Fired) ->
    case erlang:cancel_timer(Ref) of
        false -> cancel_all(Refs, Fired + 1);
        _MsLeft -> cancel_all(Refs, Fired)
    end.

%% Wait for N {Tag, X} replies (in arrival order); returns the sum of the
%% integer payloads (0 for pid payloads).
collect(0, _Tag, Sum) -> Sum;
collect(N, Tag, Sum) ->
    receive
        {Tag, X} when is_integer(X) -> collect(N - 1, Tag, Sum + X);
        {Tag, _} -> collect(N - 1, Tag, Sum)
    end.
