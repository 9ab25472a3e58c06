%% BEAM's side of `bench/run dist` (driven by bench/dist/run): one node
%% playing one role against a peer that is Erlang or Ember
%% (bench/ember/src/dist_bench.rs plays the same roles with the same
%% messages; see its module docs for the wire protocol).
%%
%%   erl -sname NAME -setcookie COOKIE -eval 'ember_dist_bench:main(["sink"])'
%%   ... main(["echo"]) | main(["send", Peer, N, small|kib])
%%   ... main(["ping", Peer, N]) | main(["idle"]) | main(["idle", Peer])
%%
%% Servers print READY once registered; clients print `RESULT key value`.
%% A gen_server-call latency role belongs here once Ember has processes
%% with distribution pids (see CALL_LATENCY in dist_bench.rs).
-module(ember_dist_bench).
-export([main/1]).

main(["sink"]) ->
    register(sink, self()),
    ready(),
    sink();
main(["echo"]) ->
    register(echo, self()),
    ready(),
    echo();
main(["idle"]) ->
    ready(),
    receive stop -> halt() end;
main(["idle", Peer]) ->
    connect(list_to_atom(Peer)),
    ready(),
    receive stop -> halt() end;
main(["send", Peer0, N0, Kind]) ->
    Peer = list_to_atom(Peer0),
    N = list_to_integer(N0),
    Body = case Kind of
               "small" -> 12345;
               "kib" -> binary:copy(<<16#2a>>, 1024)
           end,
    register(bench_ctl, self()),
    connect(Peer),
    Msg = {msg, Body},
    _ = throughput(Peer, N div 10, Msg),
    Secs = throughput(Peer, N, Msg),
    io:format("RESULT msgs_per_s ~w~n", [round(N / Secs)]),
    halt();
main(["ping", Peer0, N0]) ->
    Peer = list_to_atom(Peer0),
    N = list_to_integer(N0),
    connect(Peer),
    _ = round_trips(Peer, N div 10),
    Rtts = lists:sort(round_trips(Peer, N)),
    At = fun(Q) -> lists:nth(min(length(Rtts), trunc(length(Rtts) * Q) + 1), Rtts) end,
    io:format("RESULT p50_us ~.1f~n", [At(0.50) / 1000]),
    io:format("RESULT p99_us ~.1f~n", [At(0.99) / 1000]),
    halt().

ready() -> io:format("READY~n").

connect(Peer) -> connect(Peer, 600).
connect(Peer, 0) -> io:format(standard_error, "cannot reach ~p~n", [Peer]), halt(1);
connect(Peer, Tries) ->
    case net_adm:ping(Peer) of
        pong -> ok;
        pang -> timer:sleep(50), connect(Peer, Tries - 1)
    end.

sink() ->
    receive
        {start, ReplyTo, N} -> count(N), ReplyTo ! {done, N};
        _ -> ok
    end,
    sink().

count(0) -> ok;
count(N) -> receive {msg, _} -> count(N - 1) end.

echo() ->
    receive
        {From, T} when is_pid(From) -> From ! T;
        _ -> ok
    end,
    echo().

%% One round of N messages to {sink, Peer}; seconds until the sink said it
%% counted them all.
throughput(Peer, N, Msg) ->
    T0 = erlang:monotonic_time(),
    {sink, Peer} ! {start, {bench_ctl, node()}, N},
    send_n(Peer, N, Msg),
    receive {done, N} -> ok after 120000 -> io:format(standard_error, "no done~n", []), halt(1) end,
    erlang:convert_time_unit(erlang:monotonic_time() - T0, native, nanosecond) / 1.0e9.

send_n(_, 0, _) -> ok;
send_n(Peer, N, Msg) -> {sink, Peer} ! Msg, send_n(Peer, N - 1, Msg).

%% N sequential echo round trips; their durations in nanoseconds.
round_trips(Peer, N) -> [rtt(Peer, I) || I <- lists:seq(1, N)].

rtt(Peer, I) ->
    T0 = erlang:monotonic_time(nanosecond),
    {echo, Peer} ! {self(), I},
    receive I -> erlang:monotonic_time(nanosecond) - T0
    after 30000 -> io:format(standard_error, "echo ~p lost~n", [I]), halt(1)
    end.
