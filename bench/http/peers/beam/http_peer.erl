%% bench/http peer: a plain OTP HTTP/1.1 server on gen_tcp, as a user would
%% write it without a web framework: one acceptor, one process per
%% connection (keep-alive unless the client says close), the kernel's HTTP
%% packet parser ({packet, http_bin}).
%%
%% usage: erl -noshell -pa DIR -eval 'http_peer:main(["PORT"])'
%%
%% GET /ping -> pong; GET /fact?n=N -> bit length of N!, by a plain loop of
%% bignum multiplications; GET /spin?n=N -> N xorshift rounds.
-module(http_peer).
-export([main/1, fact/1, bit_length/1, spin/2]).

%% The xorshift64 state /spin starts from: the contract's seed
%% (crates/console/src/endpoints.rs, SPIN_SEED).
-define(SPIN_SEED, 16#9E3779B97F4A7C15).

main([PortStr]) ->
    Port = list_to_integer(PortStr),
    {ok, L} = gen_tcp:listen(Port, [binary, {packet, http_bin}, {active, false},
                                    {reuseaddr, true}, {backlog, 1024},
                                    {ip, {127, 0, 0, 1}}, {nodelay, true}]),
    io:format("http_peer: listening on 127.0.0.1:~p~n", [Port]),
    accept(L).

accept(L) ->
    case gen_tcp:accept(L) of
        {ok, S} ->
            Pid = spawn(fun() -> receive go -> conn(S) end end),
            ok = gen_tcp:controlling_process(S, Pid),
            Pid ! go;
        {error, E} ->
            io:format("http_peer: accept: ~p~n", [E])
    end,
    accept(L).

conn(S) ->
    case gen_tcp:recv(S, 0, 60000) of
        {ok, {http_request, Method, {abs_path, Path}, Vsn}} ->
            KeepAlive0 = Vsn >= {1, 1},
            case headers(S, KeepAlive0) of
                {ok, KeepAlive} ->
                    {Status, Body} = handle(Method, Path),
                    Conn = case KeepAlive of
                               true -> <<"keep-alive">>;
                               false -> <<"close">>
                           end,
                    Reply = [<<"HTTP/1.1 ">>, Status,
                             <<"\r\nContent-Type: text/plain\r\nContent-Length: ">>,
                             integer_to_binary(iolist_size(Body)),
                             <<"\r\nConnection: ">>, Conn, <<"\r\n\r\n">>, Body],
                    case gen_tcp:send(S, Reply) of
                        ok when KeepAlive -> conn(S);
                        _ -> gen_tcp:close(S)
                    end;
                closed ->
                    gen_tcp:close(S)
            end;
        _ ->
            gen_tcp:close(S)
    end.

headers(S, KeepAlive) ->
    case gen_tcp:recv(S, 0, 60000) of
        {ok, {http_header, _, 'Connection', _, V}} ->
            case string:lowercase(V) of
                <<"close">> -> headers(S, false);
                <<"keep-alive">> -> headers(S, true);
                _ -> headers(S, KeepAlive)
            end;
        {ok, {http_header, _, _, _, _}} -> headers(S, KeepAlive);
        {ok, http_eoh} -> {ok, KeepAlive};
        _ -> closed
    end.

handle('GET', Path) ->
    {P, Query} = case binary:split(Path, <<"?">>) of
                     [A, B] -> {A, B};
                     [A] -> {A, <<>>}
                 end,
    case P of
        <<"/ping">> -> {<<"200 OK">>, <<"pong">>};
        <<"/fact">> -> with_n(Query, fun(N) -> integer_to_binary(bit_length(fact(N))) end);
        <<"/spin">> -> with_n(Query, fun(N) -> integer_to_binary(spin(N, ?SPIN_SEED)) end);
        _ -> {<<"404 Not Found">>, <<"not found">>}
    end;
handle(_, _) ->
    {<<"405 Method Not Allowed">>, <<"method not allowed">>}.

with_n(Query, F) ->
    case lists:keyfind(<<"n">>, 1, uri_string:dissect_query(Query)) of
        {_, V} ->
            try binary_to_integer(V) of
                N when N >= 0 -> {<<"200 OK">>, F(N)};
                _ -> bad_n()
            catch error:badarg -> bad_n()
            end;
        false -> bad_n()
    end.

bad_n() -> {<<"400 Bad Request">>, <<"n must be a non-negative integer">>}.

fact(N) -> fact(2, N, 1).
fact(I, N, Acc) when I > N -> Acc;
fact(I, N, Acc) -> fact(I + 1, N, Acc * I).

bit_length(0) -> 0;
bit_length(X) ->
    <<Top, _/binary>> = Bin = binary:encode_unsigned(X),
    (byte_size(Bin) - 1) * 8 + top_bits(Top).

top_bits(0) -> 0;
top_bits(B) -> 1 + top_bits(B bsr 1).

-define(MASK, 16#FFFFFFFFFFFFFFFF).
spin(0, X) -> X;
spin(N, X0) ->
    X1 = X0 bxor ((X0 bsl 13) band ?MASK),
    X2 = X1 bxor (X1 bsr 7),
    X3 = X2 bxor ((X2 bsl 17) band ?MASK),
    spin(N - 1, X3).
