%% The BEAM side of `bench/run cluster` (driven by bench/cluster/run):
%% `global` on a 3-node cluster. This node starts two peers (module
%% `peer`, same cookie and epmd), connects them, then times:
%%   global_register_us  global:register_name/2 of N fresh names, one at a
%%                       time, each a pid of this node (a cluster-wide lock
%%                       and a round of messages per name): mean per name
%%   global_whereis_ns   global:whereis_name/1 of a name registered by a
%%                       peer (a local ETS read): mean over 1,000,000
%% and prints `RESULT key value` lines.
-module(ember_cluster_bench).
-export([main/1]).

main([NArg]) ->
    N = list_to_integer(NArg),
    Cookie = atom_to_list(erlang:get_cookie()),
    Peers = [begin
                 {ok, P, Node} = peer:start_link(#{name => peer:random_name(),
                                                   args => ["-setcookie", Cookie]}),
                 pong = net_adm:ping(Node),
                 {P, Node}
             end || _ <- [1, 2]],
    ok = global:sync(),
    [{_, Peer1} | _] = Peers,
    Remote = erpc:call(Peer1, erlang, spawn, [timer, sleep, [infinity]]),
    yes = erpc:call(Peer1, global, register_name, [bench_remote, Remote]),
    ok = global:sync(),
    Remote = global:whereis_name(bench_remote),
    Pids = [spawn(timer, sleep, [infinity]) || _ <- lists:seq(1, N)],
    T0 = erlang:monotonic_time(nanosecond),
    lists:foreach(fun({I, P}) -> yes = global:register_name({bench, I}, P) end,
                  lists:zip(lists:seq(1, N), Pids)),
    T1 = erlang:monotonic_time(nanosecond),
    io:format("RESULT global_register_us ~.1f~n", [(T1 - T0) / N / 1000]),
    L = 1000000,
    T2 = erlang:monotonic_time(nanosecond),
    Remote = lookup(L, bench_remote, undefined),
    T3 = erlang:monotonic_time(nanosecond),
    io:format("RESULT global_whereis_ns ~.1f~n", [(T3 - T2) / L]),
    [peer:stop(P) || {P, _} <- Peers],
    halt(0).

lookup(0, _, Last) -> Last;
lookup(K, Name, _) -> lookup(K - 1, Name, global:whereis_name(Name)).
