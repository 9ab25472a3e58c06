%% The BEAM side of the OTP scenarios, `genserver_call` and
%% `supervisor_restart`; mirrors bench/ember/src/otp.rs (see
%% bench/README.md).
%%
%% This module is both the trivial gen_server of `genserver_call` and the
%% supervisor callback of `supervisor_restart`: init/1 tells them apart by
%% its argument.
-module(ember_bench_otp).
-export([genserver_call/0, supervisor_restart/0]).
-export([init/1, handle_call/3, handle_cast/2, start_crasher/1]).

-define(CALLS, 1000000).
-define(WARMUP_CALLS, 10000).
-define(ROUNDS, 1000).
-define(CRASHES, 100).

%% ---------------------------------------------------------------------
%% Callbacks
%% ---------------------------------------------------------------------

init(echo) ->
    {ok, nostate};
init({crash_sup, Driver, Crashes}) ->
    Flags = #{strategy => one_for_one, intensity => Crashes, period => 3600},
    Crasher = #{id => crasher,
                start => {?MODULE, start_crasher, [Driver]},
                restart => permanent,
                shutdown => 5000,
                type => worker},
    {ok, {Flags, [Crasher]}}.

handle_call(ping, _From, State) ->
    {reply, pong, State}.

handle_cast(_Msg, State) ->
    {noreply, State}.

%% ---------------------------------------------------------------------
%% genserver_call: 1,000,000 sequential calls to a trivial server
%% ---------------------------------------------------------------------

genserver_call() ->
    {ok, Pid} = gen_server:start_link(?MODULE, echo, []),
    ok = calls(?WARMUP_CALLS, Pid),
    T0 = erlang:monotonic_time(),
    ok = calls(?CALLS, Pid),
    T1 = erlang:monotonic_time(),
    ok = gen_server:stop(Pid),
    [{"genserver_call_ns_per_call", ns(T0, T1) / ?CALLS, "ns"}].

calls(0, _Pid) -> ok;
calls(N, Pid) ->
    pong = gen_server:call(Pid, ping),
    calls(N - 1, Pid).

%% ---------------------------------------------------------------------
%% supervisor_restart: a one_for_one supervisor restarting a crasher
%% ---------------------------------------------------------------------

%% The supervisor reports every restart (a child_terminated error report);
%% the default logger handler would print 100,000 of them. The Ember side
%% runs without a tracing subscriber, so on both sides the reports are
%% checked against the log level and not formatted.
supervisor_restart() ->
    #{level := Level} = logger:get_primary_config(),
    ok = logger:set_primary_config(level, none),
    _ = restart_round(?CRASHES),                       % warm-up
    Ns = lists:sum([restart_round(?CRASHES) || _ <- lists:seq(1, ?ROUNDS)]),
    ok = logger:set_primary_config(level, Level),
    [{"supervisor_restart_restarts_per_s",
      ?ROUNDS * ?CRASHES / (Ns / 1.0e9), "restarts/s"}].

%% A fresh supervisor (intensity = Crashes within 3600 s: it never gives
%% up), then Crashes times: tell the crasher to crash, wait for its
%% replacement to report. Returns the time of the crash loop only.
restart_round(Crashes) ->
    {ok, Sup} = supervisor:start_link(?MODULE, {crash_sup, self(), Crashes}),
    First = receive {started, P} -> P end,
    T0 = erlang:monotonic_time(),
    ok = crash_loop(Crashes, First),
    T1 = erlang:monotonic_time(),
    ok = gen_server:stop(Sup),
    ns(T0, T1).

crash_loop(0, _Child) -> ok;
crash_loop(N, Child) ->
    Child ! crash,
    receive {started, Next} -> crash_loop(N - 1, Next) end.

start_crasher(Driver) ->
    {ok, spawn_link(fun() ->
                            Driver ! {started, self()},
                            receive crash -> exit(crash) end
                    end)}.

ns(T0, T1) -> erlang:convert_time_unit(T1 - T0, native, nanosecond).
