#!/usr/bin/env escript
%% -*- erlang -*-
%%
%% The BEAM reference for wasmvisor's benchmark: the same workloads on a plain
%% gen_server counter under a simple_one_for_one supervisor (see README.md in
%% this folder). Run:  escript bench/beam/genserver_bench.erl [--quick]
%%
%% No `%%!` emulator flags on purpose: the BEAM defaults apply, i.e. one
%% scheduler per logical CPU available to the OS process (+S N:N with N =
%% the CPUs of the affinity mask), default busy-wait and binding settings,
%% which is also how tokio sizes its worker pool on the Rust side.
%%
%% stdout gets one JSON object and nothing else; progress goes to stderr.
%% Uses only erts, kernel, stdlib and compiler (for -mode(compile)), all in
%% Debian's erlang-base.

-module(genserver_bench).
%% OTP 25 escripts are interpreted by default; an interpreted module cannot be
%% a gen_server callback module, and interpreted client loops would measure
%% erl_eval. Compiled, everything below runs as ordinary (JIT) BEAM code.
-mode(compile).

-export([main/1]).
%% supervisor and gen_server callbacks (both use init/1: dispatched on its
%% argument, so no -behaviour attributes to avoid the "conflicting
%% behaviours" warning).
-export([start_counter/2, init/1, handle_call/3, handle_cast/2, handle_info/2,
         terminate/2]).

%% The Rust bench sets max_restarts = u32::MAX with the default
%% max_seconds = 5: crash cycles must never exhaust the supervisor.
-define(INTENSITY, 4294967295).
-define(PERIOD, 5).
%% How many processes start children at once in the spawn workload (the Rust
%% bench's SPAWNERS).
-define(SPAWNERS, 4).
-define(SUP, wasmvisor_bench_sup).

%% ---------------------------------------------------------------------------
%% The counter: a gen_server mirroring the `chaos` plugin's counter.
%% State {Args, Count}. Calls: {add, N} -> new count; state -> {Args, Count};
%% crash -> the server raises (a trap in wasm). Cast: bump -> Count + 1.

start_counter(Name, Args) ->
    gen_server:start_link({local, Name}, ?MODULE, {counter, Args}, []).

init({counter, Args}) ->
    {ok, {Args, 0}};
init(supervisor) ->
    Flags = #{strategy => simple_one_for_one,
              intensity => ?INTENSITY,
              period => ?PERIOD},
    Child = #{id => counter,
              start => {?MODULE, start_counter, []},
              restart => permanent,
              shutdown => 5000,
              type => worker,
              modules => [?MODULE]},
    {ok, {Flags, [Child]}}.

handle_call({add, N}, _From, {Args, Count}) ->
    New = Count + N,
    {reply, New, {Args, New}};
handle_call(state, _From, State) ->
    {reply, State, State};
handle_call(crash, _From, _State) ->
    erlang:error(crash).

handle_cast(bump, {Args, Count}) ->
    {noreply, {Args, Count + 1}};
handle_cast(crash, _State) ->
    erlang:error(crash).

handle_info(_Info, State) ->
    {noreply, State}.

terminate(_Reason, _State) ->
    ok.

%% ---------------------------------------------------------------------------
%% Driver

sizes(full) ->
    #{spawn => 10000, calls => 100000, calls_4c => 200000,
      casts => 1000000, cast_children => 1000, crashes => 1000};
sizes(quick) ->
    #{spawn => 500, calls => 5000, calls_4c => 8000,
      casts => 20000, cast_children => 100, crashes => 100}.

usage() ->
    io:format(standard_error,
              "usage: escript genserver_bench.erl [--quick] [--log-crashes] [--spin-retry]~n"
              "  --quick        small sizes, for CI smoke runs~n"
              "  --log-crashes  keep OTP's crash reports (written to stderr);~n"
              "                 by default they are not logged (see README.md)~n"
              "  --spin-retry   crash cycles: retry without erlang:yield() in~n"
              "                 between (see README.md)~n",
              []).

main(Argv) ->
    case parse(Argv, #{mode => full, log => false, yield => true}) of
        {ok, Opts} ->
            try run(Opts) of
                ok -> ok
            catch
                Class:Reason:Stack ->
                    io:format(standard_error, "genserver_bench: failed: ~p:~p~n~p~n",
                              [Class, Reason, Stack]),
                    halt(1)
            end;
        error ->
            usage(),
            halt(2)
    end.

parse([], Opts) -> {ok, Opts};
parse(["--quick" | T], Opts) -> parse(T, Opts#{mode := quick});
parse(["--log-crashes" | T], Opts) -> parse(T, Opts#{log := true});
parse(["--spin-retry" | T], Opts) -> parse(T, Opts#{yield := false});
parse(_, _) -> error.

run(#{mode := Mode, log := Log, yield := Yield}) ->
    Started = now_ns(),
    setup_logger(Log),
    S = sizes(Mode),
    progress("OTP ~s, ~s, ~b schedulers online, ~s mode",
             [erlang:system_info(otp_release), erlang:system_info(emu_flavor),
              erlang:system_info(schedulers_online), Mode]),
    {ok, Sup} = supervisor:start_link({local, ?SUP}, ?MODULE, supervisor),

    progress("spawn (~b servers)", [maps:get(spawn, S)]),
    {SpawnUs, KiB} = spawn_workload(Sup, maps:get(spawn, S)),

    progress("calls (~b from 1 client)", [maps:get(calls, S)]),
    start(Sup, c0, undefined),
    {Rate1, P50, P99} = calls_1c(c0, maps:get(calls, S)),

    progress("calls from 4 clients (~b)", [maps:get(calls_4c, S)]),
    [start(Sup, Name, undefined) || Name <- [c1, c2, c3]],
    Rate4 = calls_4c([c0, c1, c2, c3], maps:get(calls_4c, S)),

    progress("casts (~b over ~b servers)", [maps:get(casts, S), maps:get(cast_children, S)]),
    CastRate = casts(Sup, maps:get(casts, S), maps:get(cast_children, S)),

    progress("crash cycles (~b)", [maps:get(crashes, S)]),
    {R50, R99} = crash_cycles(Sup, maps:get(crashes, S), Yield),

    Json = json([{spawn_us, SpawnUs},
                 {rss_per_instance_kib, KiB},
                 {call_1c_per_s, Rate1},
                 {call_p50_us, P50},
                 {call_p99_us, P99},
                 {call_4c_per_s, Rate4},
                 {cast_per_s, CastRate},
                 {restart_p50_us, R50},
                 {restart_p99_us, R99},
                 {otp_release, {string, erlang:system_info(otp_release)}},
                 {schedulers, erlang:system_info(schedulers_online)}]),
    io:put_chars(standard_io, [Json, $\n]),
    progress("done in ~.2f s", [(now_ns() - Started) / 1.0e9]),
    ok.

%% OTP logs three error reports per crash (the gen_server's, proc_lib's
%% crash report and the supervisor's child_terminated), formatted in the
%% crashing process and in the supervisor, on the restart path. wasmvisor's
%% bench logs nothing per crash (its "exited" line is at info level, below
%% the bench's default warn). By default these reports are dropped here
%% (primary level critical); --log-crashes keeps OTP's default level
%% (notice). Either way the default handler writes to stderr, not stdout.
setup_logger(Log) ->
    _ = logger:remove_handler(default),
    ok = logger:add_handler(default, logger_std_h,
                            #{config => #{type => standard_error}}),
    Level = case Log of
                true -> notice;
                false -> critical
            end,
    ok = logger:set_primary_config(level, Level).

start(Sup, Name, Args) ->
    {ok, Pid} = supervisor:start_child(Sup, [Name, Args]),
    Pid.

stop(Sup, Name) ->
    ok = supervisor:terminate_child(Sup, whereis(Name)).

%% spawn: N servers started from ?SPAWNERS processes, each registered under
%% its own atom (s0, s1, ...), args #{transaction_id => <<"sI">>} as the Rust
%% bench gives its trackers. Returns µs per server and KiB of process
%% memory (erlang:memory(processes) delta, which includes the supervisor's
%% bookkeeping of its children) per server.
spawn_workload(Sup, N) ->
    Parent = self(),
    garbage_collect(),
    MemBefore = erlang:memory(processes),
    T0 = now_ns(),
    Spawners = [spawn_link(fun() ->
                                   spawn_range(Sup, K, N),
                                   Parent ! {spawned, self()}
                           end)
                || K <- lists:seq(0, ?SPAWNERS - 1)],
    [receive {spawned, P} -> ok end || P <- Spawners],
    Us = (now_ns() - T0) / 1000 / N,
    Pids = [Pid || {_, Pid, _, _} <- supervisor:which_children(Sup), is_pid(Pid)],
    N = length(Pids),
    MemAfter = erlang:memory(processes),
    KiB = (MemAfter - MemBefore) / 1024 / N,
    Own = lists:sum([M || P <- Pids, {memory, M} <- [erlang:process_info(P, memory)]]),
    progress("  ~.2f us per server; processes memory +~.2f KiB per server "
             "(the servers' own process_info memory: ~.2f KiB each)",
             [Us, KiB, Own / 1024 / N]),
    [ok = supervisor:terminate_child(Sup, P) || P <- Pids],
    {Us, KiB}.

spawn_range(_Sup, I, N) when I >= N ->
    ok;
spawn_range(Sup, I, N) ->
    Id = "s" ++ integer_to_list(I),
    Args = #{transaction_id => list_to_binary(Id)},
    start(Sup, list_to_atom(Id), Args),
    spawn_range(Sup, I + ?SPAWNERS, N).

%% calls, 1 client: N/10 warm-up calls, then N calls of {add, 1} in a row,
%% each timed; the samples go to an atomics array (no garbage on the
%% client's heap while it measures).
calls_1c(Name, N) ->
    call_n(Name, N div 10),
    Samples = atomics:new(N, [{signed, false}]),
    T0 = now_ns(),
    timed_calls(Name, Samples, 1, N),
    Rate = N / ((now_ns() - T0) / 1.0e9),
    Sorted = lists:sort([atomics:get(Samples, I) || I <- lists:seq(1, N)]),
    {P50, P99} = {percentile_us(Sorted, 0.5), percentile_us(Sorted, 0.99)},
    progress("  ~b calls/s, p50 ~.2f us, p99 ~.2f us (client on scheduler ~b, "
             "server on ~b)", [round(Rate), P50, P99, erlang:system_info(scheduler_id),
                               scheduler_of(Name)]),
    {Rate, P50, P99}.

call_n(_Name, 0) ->
    ok;
call_n(Name, K) ->
    _ = gen_server:call(Name, {add, 1}),
    call_n(Name, K - 1).

timed_calls(_Name, _Samples, I, N) when I > N ->
    ok;
timed_calls(Name, Samples, I, N) ->
    S = now_ns(),
    Count = gen_server:call(Name, {add, 1}),
    atomics:put(Samples, I, now_ns() - S),
    true = is_integer(Count),
    timed_calls(Name, Samples, I + 1, N).

%% calls, 4 clients: N calls split over 4 client processes, each calling its
%% own server; timed from before the clients start until the last is done.
calls_4c(Names, N) ->
    Parent = self(),
    Per = N div length(Names),
    T0 = now_ns(),
    Clients = [spawn_link(fun() ->
                                  call_n(Name, Per),
                                  Parent ! {called, self()}
                          end)
               || Name <- Names],
    [receive {called, C} -> ok end || C <- Clients],
    Rate = Per * length(Names) / ((now_ns() - T0) / 1.0e9),
    progress("  ~b calls/s", [round(Rate)]),
    Rate.

%% casts: M servers k0..k(M-1); N casts of bump round-robin over them from
%% this process (by registered name), then a state call to each that checks
%% it handled exactly N/M casts; timed until the last check returns.
casts(Sup, N, M) ->
    Names = list_to_tuple([list_to_atom("k" ++ integer_to_list(I))
                           || I <- lists:seq(0, M - 1)]),
    [start(Sup, Name, undefined) || Name <- tuple_to_list(Names)],
    Per = N div M,
    T0 = now_ns(),
    cast_n(Names, M, 0, N),
    [case gen_server:call(Name, state) of
         {undefined, Per} -> ok;
         Other -> error({casts_lost, Name, Other, Per})
     end
     || Name <- tuple_to_list(Names)],
    Rate = N / ((now_ns() - T0) / 1.0e9),
    progress("  ~b casts/s", [round(Rate)]),
    [stop(Sup, Name) || Name <- tuple_to_list(Names)],
    Rate.

cast_n(_Names, _M, I, N) when I >= N ->
    ok;
cast_n(Names, M, I, N) ->
    ok = gen_server:cast(element(I rem M + 1, Names), bump),
    cast_n(Names, M, I + 1, N).

%% crash -> serving: call crash (the server raises, the caller catches the
%% exit), then call state by the registered name until it is served by the
%% restarted server (retrying at once, no sleep, while the name is not
%% registered), check the init args; each cycle timed. The pid must change
%% every cycle (one restart per crash).
%%
%% Between two attempts the client calls erlang:yield(): it gives its
%% scheduler to any process waiting in the same run queue (typically the
%% supervisor, about to restart the server) and comes back at once if there
%% is none. Without it (--spin-retry) the client keeps its scheduler for a
%% whole time slice while the supervisor waits behind it, and the figure
%% measures that wait (README.md).
crash_cycles(Sup, N, Yield) ->
    Args = #{check => 4242},
    start(Sup, crasher, Args),
    Samples = atomics:new(N, [{signed, false}]),
    put(yield_between_retries, Yield),
    Retries = crash_loop(Args, Samples, 1, N, 0),
    Sorted = lists:sort([atomics:get(Samples, I) || I <- lists:seq(1, N)]),
    {P50, P99} = {percentile_us(Sorted, 0.5), percentile_us(Sorted, 0.99)},
    progress("  p50 ~.2f us, p99 ~.2f us (~.2f noproc retries per cycle, ~s)",
             [P50, P99, Retries / N,
              case Yield of true -> "yield between retries"; false -> "spinning" end]),
    stop(Sup, crasher),
    {P50, P99}.

crash_loop(_Args, _Samples, I, N, Retries) when I > N ->
    Retries;
crash_loop(Args, Samples, I, N, Retries) ->
    Old = whereis(crasher),
    T0 = now_ns(),
    try gen_server:call(crasher, crash) of
        Reply -> error({crash_answered, Reply})
    catch
        exit:{{crash, _Stack}, {gen_server, call, _}} -> ok
    end,
    {State, Tries} = call_until_served(crasher, state, 0),
    atomics:put(Samples, I, now_ns() - T0),
    case State of
        {Args, 0} -> ok;
        _ -> error({init_args_lost, State})
    end,
    case whereis(crasher) of
        Old -> error({not_restarted, Old});
        _ -> ok
    end,
    crash_loop(Args, Samples, I + 1, N, Retries + Tries).

call_until_served(Name, Msg, Tries) ->
    try
        {gen_server:call(Name, Msg), Tries}
    catch
        exit:{noproc, _} ->
            get(yield_between_retries) andalso erlang:yield(),
            call_until_served(Name, Msg, Tries + 1)
    end.

%% ---------------------------------------------------------------------------
%% Helpers

now_ns() ->
    erlang:monotonic_time(nanosecond).

%% The Rust bench's percentile: sorted[round((len - 1) * q)], in µs.
percentile_us(Sorted, Q) ->
    I = round((length(Sorted) - 1) * Q),
    lists:nth(I + 1, Sorted) / 1000.

%% Which scheduler a gen_server runs on (a diagnostic, outside any timing):
%% a fun run inside it through sys, which sends the answer back.
scheduler_of(Name) ->
    Self = self(),
    Ref = make_ref(),
    sys:replace_state(Name, fun(State) ->
                                    Self ! {Ref, erlang:system_info(scheduler_id)},
                                    State
                            end),
    receive {Ref, Id} -> Id end.

progress(Fmt, Args) ->
    io:format(standard_error, "beam bench: " ++ Fmt ++ "~n", Args).

%% One JSON object by hand (OTP 25 has no json module): floats with 3
%% decimals, integers as integers, {string, S} as a JSON string (the only
%% string here is the OTP release, digits only).
json(Pairs) ->
    ["{", lists:join(",", [["\"", atom_to_list(K), "\":", json_value(V)]
                           || {K, V} <- Pairs]), "}"].

json_value({string, S}) -> ["\"", S, "\""];
json_value(I) when is_integer(I) -> integer_to_list(I);
json_value(F) when is_float(F) -> float_to_list(F, [{decimals, 3}]).
