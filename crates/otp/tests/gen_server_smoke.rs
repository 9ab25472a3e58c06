use ember_otp::gen::ReplyTo;
use ember_otp::gen_server::{self, CallReturn, GenServer, Init};
use ember_runtime::Runtime;

struct Echo;
impl GenServer for Echo {
    type Args = ();
    type Call = u64;
    type Reply = u64;
    type Cast = ();
    type Continue = ();
    async fn init(_: ()) -> Init<Self> {
        Init::Ok(Echo)
    }
    async fn handle_call(&mut self, n: u64, _from: &ReplyTo<u64>) -> CallReturn<Self> {
        CallReturn::Reply(n + 1)
    }
}

#[test]
fn smoke() {
    let rt = Runtime::builder().schedulers(2).build().unwrap();
    rt.block_on(async {
        let s = gen_server::start_link::<Echo>(()).await.unwrap();
        let t = std::time::Instant::now();
        for i in 0..100_000 {
            assert_eq!(s.call(i).await, Ok(i + 1));
        }
        eprintln!("{:?} per call", t.elapsed() / 100_000);
    });
}
