%% The BEAM side of the `responsiveness` scenario; mirrors
%% bench/ember/src/responsiveness.rs (see bench/README.md).
%%
%% For 1 and then 2 schedulers online: a baseline with no load; then 10
%% bignum hogs (a factorial-style product growing forever) and separately 10
%% spin hogs (small-integer arithmetic), each time with 10 busy processes.
%% Meanwhile, every 10 ms for BENCH_SECONDS (default 5) seconds, a probe
%% computing 2000! and a probe that just replies are spawned; each measures
%% its own latency from spawn to reply. Hog progress is measured with and
%% without probes.
%%
%% Each case runs on exactly the cores it names: besides schedulers_online,
%% the whole VM (every thread, dirty schedulers and async threads included)
%% is pinned with `taskset` to the first 1 or 2 cores it may use, as the
%% Ember side pins its process.
-module(ember_bench_responsiveness).
-export([scenario/0]).

-define(HOGS, 10).
-define(BUSY, 10).
-define(PERIOD_MS, 10).
-define(MASK, 16#3FFFFFFFFFFFFFF).

scenario() ->
    Window = window_ms(),
    Original = erlang:system_info(schedulers_online),
    Allowed = allowed_cores(),
    Metrics = lists:append([per_cores(Cores, Allowed, Window) || Cores <- [1, 2]]),
    erlang:system_flag(schedulers_online, Original),
    pin(Allowed),
    Metrics.

%% The cores the VM may run on (Cpus_allowed_list of /proc/self/status).
allowed_cores() ->
    {ok, Status} = file:read_file("/proc/self/status"),
    [_, Rest] = binary:split(Status, <<"Cpus_allowed_list:">>),
    [List | _] = binary:split(Rest, <<"\n">>),
    lists:append([case binary:split(Part, <<"-">>) of
                      [Lo, Hi] -> lists:seq(binary_to_integer(Lo), binary_to_integer(Hi));
                      [One] -> [binary_to_integer(One)]
                  end || Part <- binary:split(string:trim(List), <<",">>, [global])]).

%% Pins every thread of the VM to Cores (`taskset -a -p -c`); fails the
%% scenario if that is impossible.
pin(Cores) ->
    List = string:join([integer_to_list(C) || C <- Cores], ","),
    Cmd = "taskset -a -p -c " ++ List ++ " " ++ os:getpid() ++ " >/dev/null 2>&1; echo $?",
    case string:trim(os:cmd(Cmd)) of
        "0" -> io:format("# responsiveness: pinned to cores ~s~n", [List]);
        Rc -> error({taskset_failed, List, Rc})
    end.

window_ms() ->
    case os:getenv("BENCH_SECONDS") of
        false -> 5000;
        S ->
            try round(list_to_float(S) * 1000)
            catch _:_ -> list_to_integer(S) * 1000
            end
    end.

per_cores(Cores, Allowed, _Window) when length(Allowed) < Cores ->
    error({too_few_cores, Cores, Allowed});
per_cores(Cores, Allowed, Window) ->
    pin(lists:sublist(Allowed, Cores)),
    erlang:system_flag(schedulers_online, Cores),
    C = integer_to_list(Cores) ++ "core",
    {Fact0, Ping0, Lost0} = probe(Window),
    Unloaded = latency("unloaded", C, Fact0, Ping0)
        ++ [{"responsiveness_unloaded_lost_" ++ C, Lost0, "probes"}],
    Loaded = lists:append([loaded(Load, C, Window) || Load <- [bignum, spin]]),
    Unloaded ++ Loaded.

loaded(Load, C, Window) ->
    Name = atom_to_list(Load),
    Unit = case Load of bignum -> "mults/s"; spin -> "ops/s" end,
    {Rate, {Fact, Ping, Lost}} = with_load(Load, fun() -> probe(Window) end),
    {Solo, _} = with_load(Load, fun() -> timer:sleep(Window) end),
    latency("loaded_" ++ Name, C, Fact, Ping)
        ++ [{"responsiveness_loaded_" ++ Name ++ "_lost_" ++ C, Lost, "probes"},
            {"responsiveness_hog_" ++ Name ++ "_probed_" ++ C, Rate, Unit},
            {"responsiveness_hog_" ++ Name ++ "_solo_" ++ C, Solo, Unit}].

%% Runs Fun while the hogs and busy processes run; returns the hogs'
%% operations per second and Fun's result.
with_load(Load, Fun) ->
    Ops = atomics:new(1, []),
    T0 = erlang:monotonic_time(),
    Hogs = [spawn(fun() -> hog(Load, Ops) end) || _ <- lists:seq(1, ?HOGS)],
    Busy = [spawn(fun() -> busy(1) end) || _ <- lists:seq(1, ?BUSY)],
    Result = Fun(),
    Elapsed = erlang:monotonic_time() - T0,
    Count = atomics:get(Ops, 1),
    stop_all(Hogs ++ Busy),
    Secs = erlang:convert_time_unit(Elapsed, native, microsecond) / 1.0e6,
    {Count / Secs, Result}.

stop_all(Pids) ->
    Refs = [erlang:monitor(process, P) || P <- Pids],
    [exit(P, kill) || P <- Pids],
    [receive {'DOWN', R, process, _, _} -> ok end || R <- Refs],
    ok.

hog(bignum, Ops) -> bignum(1, 1, Ops);
hog(spin, Ops) -> spin(88172645463325252 band ?MASK, 1024, Ops).

bignum(Acc, I, Ops) ->
    atomics:add(Ops, 1, 1),
    bignum(Acc * I, I + 1, Ops).

spin(X, 0, Ops) ->
    atomics:add(Ops, 1, 1024),
    spin(X, 1024, Ops);
spin(X, N, Ops) ->
    X1 = X bxor ((X bsl 13) band ?MASK),
    X2 = X1 bxor (X1 bsr 7),
    X3 = X2 bxor ((X2 bsl 17) band ?MASK),
    spin((X3 * 3) band ?MASK, N - 1, Ops).

busy(X) -> busy(step(X, 100)).

step(X, 0) -> X;
step(X, N) -> step((X * 6364136223846793005 + 1442695040888963407) band ?MASK, N - 1).

fact(N) -> fact(N, 1).
fact(1, Acc) -> Acc;
fact(N, Acc) -> fact(N - 1, Acc * N).

%% Spawns both probes every 10 ms for Window ms, then collects the replies.
probe(Window) ->
    Self = self(),
    Start = erlang:monotonic_time(millisecond),
    Sent = probe_loop(Self, Start, Window, 0),
    collect(Sent, [], []).

probe_loop(Self, Start, Window, Tick) ->
    Now = erlang:monotonic_time(millisecond),
    case Now - Start >= Window of
        true -> Tick * 2;
        false ->
            T0 = erlang:monotonic_time(),
            spawn(fun() -> _ = fact(2000), Self ! {probe, fact, erlang:monotonic_time() - T0} end),
            T1 = erlang:monotonic_time(),
            spawn(fun() -> Self ! {probe, ping, erlang:monotonic_time() - T1} end),
            Next = Start + (Tick + 1) * ?PERIOD_MS,
            Delay = max(0, Next - erlang:monotonic_time(millisecond)),
            receive after Delay -> ok end,
            probe_loop(Self, Start, Window, Tick + 1)
    end.

collect(Sent, Fact, Ping) when length(Fact) + length(Ping) >= Sent ->
    {Fact, Ping, 0};
collect(Sent, Fact, Ping) ->
    receive
        {probe, fact, D} -> collect(Sent, [D | Fact], Ping);
        {probe, ping, D} -> collect(Sent, Fact, [D | Ping])
    after 10000 ->
        {Fact, Ping, Sent - length(Fact) - length(Ping)}
    end.

latency(Prefix, C, Fact, Ping) ->
    lists:append([stats(Prefix, Probe, C, Samples)
                  || {Probe, Samples} <- [{"fact", Fact}, {"ping", Ping}]]).

stats(Prefix, Probe, C, Samples) ->
    Sorted = lists:sort([erlang:convert_time_unit(S, native, nanosecond) / 1.0e6
                         || S <- Samples]),
    Name = fun(Stat) -> "responsiveness_" ++ Prefix ++ "_" ++ Probe ++ "_" ++ Stat ++ "_" ++ C end,
    [{Name("p50"), percentile(Sorted, 50), "ms"},
     {Name("p99"), percentile(Sorted, 99), "ms"},
     {Name("max"), lists:last(Sorted), "ms"}].

percentile(Sorted, P) ->
    Len = length(Sorted),
    Rank = max(1, min(Len, ceil(P / 100 * Len))),
    lists:nth(Rank, Sorted).
