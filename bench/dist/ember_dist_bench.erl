%% BEAM's side of `bench/run dist` (driven by bench/dist/run): one node
%% playing one role against a peer that is Erlang or Ember
%% (bench/ember/src/dist_bench.rs plays the same roles with the same
%% messages; see its module docs for the wire protocol).
%%
%%   erl -sname NAME -setcookie COOKIE -eval 'ember_dist_bench:main(["sink"])'
%%   ... main(["echo"]) | main(["send", Peer, N, small|kib])
%%   ... main(["ping", Peer, N]) | main(["idle"]) | main(["idle", Peer])
%%   ... main(["callee"]) | main(["call", Peer, N])
%%   ... main(["pecho"]) | main(["pping", Peer, N]): echo and ping (Ember's
%%   side plays these with Ember processes; a BEAM process is one already)
%%
%% Servers print READY once registered; clients print `RESULT key value`.
%% `callee` is a gen_server registered as `callee` answering
%% `{echo, I}` with `I`; `call` makes N sequential
%% `gen_server:call({callee, Peer}, {echo, I})`.
-module(ember_dist_bench).
-behaviour(gen_server).
-export([main/1]).
-export([init/1, handle_call/3, handle_cast/2]).

main(["sink"]) ->
    register(sink, self()),
    ready(),
    sink();
main(["echo"]) ->
    register(echo, self()),
    ready(),
    echo();
main(["pecho"]) ->
    main(["echo"]);
main(["pping" | Args]) ->
    main(["ping" | Args]);
main(["callee"]) ->
    {ok, _} = gen_server:start({local, callee}, ?MODULE, [], []),
    ready(),
    receive stop -> halt() end;
main(["call", Peer0, N0]) ->
    Peer = list_to_atom(Peer0),
    N = list_to_integer(N0),
    connect(Peer),
    _ = calls(Peer, N div 10),
    report(calls(Peer, N));
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
    report(round_trips(Peer, N)).

%% Prints the p50 and p99 of round trips in nanoseconds, and halts.
report(Rtts0) ->
    Rtts = lists:sort(Rtts0),
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

%% N sequential gen_server calls to {callee, Peer}; their durations in
%% nanoseconds.
calls(Peer, N) -> [call(Peer, I) || I <- lists:seq(1, N)].

call(Peer, I) ->
    T0 = erlang:monotonic_time(nanosecond),
    I = gen_server:call({callee, Peer}, {echo, I}, 30000),
    erlang:monotonic_time(nanosecond) - T0.

%% The callee: `{echo, I}` -> `I`.
init([]) -> {ok, nostate}.
handle_call({echo, I}, _From, S) -> {reply, I, S}.
handle_cast(_, S) -> {noreply, S}.
