%% The Erlang side of tests/term_erl_interop.rs.
%%
%% Prints every term of terms/0 as hex, in three encodings:
%%   T <index> <hex>   term_to_binary(T, [{minor_version, 2}, deterministic])
%%   D <index> <hex>   term_to_binary(T) (OTP 25: Latin-1 atom tags)
%%   C <index> <hex>   term_to_binary(T, [compressed])
%% then "S <index> <index> ...", the indices in term order (lists:sort/2 with
%% =<, which is stable, so terms that are == keep their order), then END. It then reads lines "<index> <hex>", decodes each with
%% binary_to_term/1 and answers "OK <index>" when the result is =:= to term
%% <index>, "BAD <index> <term>" or "ERR <index> <reason>" otherwise, until
%% DONE or end of input.
-module(ember_term_interop).
-export([main/0]).

terms() ->
    %% Known only at run time, so that the closure really captures it.
    N = 42 + (erlang:system_time() band 0),
    Closure = fun(X) -> X + N end,
    OtherPid = binary_to_term(<<131, 88, 119, 10, "other@host", 0, 0, 0, 77, 0, 0, 0, 3, 0, 0, 0, 7>>),
    FiveWordRef = binary_to_term(<<131, 90, 0, 5, 119, 10, "other@host", 0, 0, 0, 7,
                                   1:32, 2:32, 3:32, 4:32, 5:32>>),
    WidePort = binary_to_term(<<131, 120, 119, 10, "other@host", 5:64, 0, 0, 0, 7>>),
    [ok,                                            % 0
     'hello world',                                 % 1
     'ünïcödé',                                     % 2
     0, 255, 256, -1,                               % 3-6
     2147483647, 2147483648,                        % 7-8
     -(1 bsl 63), 1 bsl 64,                         % 9-10
     1 bsl 2040, -(1 bsl 3000),                     % 11-12
     1.5, -0.0, 1.0e300,                            % 13-15
     <<>>, <<"hello">>, <<1:3>>, <<1, 2, 3:5>>,     % 16-19
     [], [1, 2, 3], "hello", [1, 2, 300],           % 20-23
     [a | b], [1, 2 | 3],                           % 24-25
     {}, {ok, 1}, list_to_tuple(lists:seq(1, 300)), % 26-28
     #{}, #{a => 1, b => 2},                        % 29-30
     #{5 => a, 1.0 => b, 1 => c, "k" => v, <<"k">> => w, {t} => x, [l] => y}, % 31
     maps:from_list([{I, I * I} || I <- lists:seq(1, 100)]),                  % 32
     self(), make_ref(), hd(erlang:ports()),        % 33-35
     fun erlang:abs/1, Closure,                     % 36-37
     lists:seq(1, 70000),                           % 38
     lists:foldl(fun(_, A) -> {A} end, x, lists:seq(1, 100)),                 % 39
     {[alias | make_ref()], yes},                   % 40
     ['Ω', 'EXIT', '', '\'quoted\''],               % 41
     binary:copy(<<"ab">>, 50000),                  % 42
     #{a => #{b => [1.5, <<"x">>]}},                % 43
     OtherPid, FiveWordRef, WidePort,               % 44-46
     [{pid, self()}, {ref, make_ref()} | tail]      % 47
    ].

main() ->
    Indexed = lists:zip(lists:seq(0, length(terms()) - 1), terms()),
    [emit("T", I, term_to_binary(T, [{minor_version, 2}, deterministic])) || {I, T} <- Indexed],
    [emit("D", I, term_to_binary(T)) || {I, T} <- Indexed],
    [emit("C", I, term_to_binary(T, [compressed])) || {I, T} <- Indexed],
    Sorted = lists:sort(fun({_, A}, {_, B}) -> A =< B end, Indexed),
    io:put_chars(["S", [[$\s, integer_to_list(I)] || {I, _} <- Sorted], $\n]),
    io:put_chars("END\n"),
    loop(maps:from_list(Indexed)).

emit(Kind, I, Bin) ->
    io:put_chars([Kind, $\s, integer_to_list(I), $\s, binary:encode_hex(Bin), $\n]).

loop(Terms) ->
    case io:get_line("") of
        eof -> halt(0);
        "DONE\n" -> halt(0);
        Line ->
            [IStr, Hex] = string:lexemes(string:trim(Line), " "),
            I = list_to_integer(IStr),
            Reply =
                try binary_to_term(binary:decode_hex(list_to_binary(Hex))) of
                    T ->
                        case T =:= maps:get(I, Terms) of
                            true -> ["OK ", IStr];
                            false -> io_lib:format("BAD ~s ~w", [IStr, T])
                        end
                catch
                    C:R -> io_lib:format("ERR ~s ~p:~p", [IStr, C, R])
                end,
            io:put_chars([Reply, $\n]),
            loop(Terms)
    end.
