#[path = "../../sip-lb/tests/xdp_fixtures.rs"] mod fixtures;
