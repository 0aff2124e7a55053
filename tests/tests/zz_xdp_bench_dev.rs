#[path = "../../sip-lb/benches/xdp.rs"] mod bench;
#[test] fn run() { bench::main() }
