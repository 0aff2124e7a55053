//! One connection: read bytes, frame them (`sip_lb_proto::stream`), hand
//! each message to the stream worker its Call-ID picks, and write what the
//! workers and the UDP workers queue for it. It makes no SIP decision
//! beyond framing: the CRLF keep-alive is answered here, every reply comes
//! from a worker.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crossbeam::channel::{Sender, TrySendError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use sip_lb_common::{call_id_hash, worker_for_hash};
use sip_lb_proto::flow::FlowToken;
use sip_lb_proto::proxy::ReplyCode;
use sip_lb_proto::stream::{Frame, FrameError, Framer};

use super::flows::{Flows, Out};
use super::stats::StreamStats;
use super::worker::{StreamIn, What};

/// How long a closing connection may take to write its last reply.
const LINGER: Duration = Duration::from_secs(2);

/// Bytes read per `read` call at most.
const READ_CHUNK: usize = 16 * 1024;

/// What every connection shares.
pub struct Shared {
    /// One queue per stream worker.
    pub workers: Vec<Sender<StreamIn>>,
    pub flows: Arc<Flows>,
    pub stats: Arc<StreamStats>,
    pub idle: Duration,
    pub max_message: usize,
    /// The workers' shield: blocked and banned sources are refused at accept.
    pub shield: crate::dataplane::SharedShield,
    pub plan: crate::dataplane::SharedPlan,
}

/// Serves one accepted connection until it closes; frees its flow slot.
pub async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    on: usize,
    token: FlowToken,
    rx: mpsc::Receiver<Out>,
    tx: mpsc::Sender<Out>,
    sh: Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut r, w) = tokio::io::split(stream);
    let mut writer = tokio::spawn(write_loop(w, rx));
    let fatal = read_loop(&mut r, peer, on, token, &tx, &sh).await;
    if !fatal {
        // The peer is gone or idle: nothing more will be written. (After a
        // framing error the slot stays until the worker's reply and Close.)
        sh.flows.close(token, peer);
    }
    drop(tx);
    // Let the last reply (and the worker's Close) reach the socket.
    if tokio::time::timeout(LINGER, &mut writer).await.is_err() {
        writer.abort();
    }
    sh.flows.close(token, peer);
    sh.stats.closed.inc();
}

/// Reads and frames until the peer closes, goes idle or breaks framing
/// (then true: a worker answers and closes).
async fn read_loop<R: AsyncRead + Unpin>(
    r: &mut R,
    peer: SocketAddr,
    on: usize,
    token: FlowToken,
    tx: &mpsc::Sender<Out>,
    sh: &Shared,
) -> bool {
    let mut framer = Framer::new(sh.max_message);
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    loop {
        buf.reserve(READ_CHUNK);
        let read = tokio::time::timeout(sh.idle, r.read_buf(&mut buf)).await;
        match read {
            Err(_) => {
                sh.stats.closed_idle.inc();
                return false;
            }
            Ok(Ok(0)) | Ok(Err(_)) => return false,
            Ok(Ok(_)) => {}
        }
        loop {
            let hand = |what: What, len: usize, call_id: Option<(usize, usize)>, buf: &[u8]| {
                let m = StreamIn { token, peer, on, what, bytes: buf[..len].to_vec(), call_id, link: None };
                hand_off(sh, m);
            };
            let used = match framer.next(&buf) {
                Frame::NeedMore => break,
                Frame::Ping { len } => {
                    sh.stats.pings.inc();
                    let _ = tx.try_send(Out::Bytes(b"\r\n".to_vec()));
                    len
                }
                Frame::Skip { len } => len,
                Frame::Message { len, call_id } => {
                    sh.stats.messages.inc();
                    hand(What::Message, len, call_id, &buf);
                    len
                }
                Frame::NoLength { len } => {
                    sh.stats.no_length.inc();
                    hand(What::Refuse { code: ReplyCode::BadRequest, close: false }, len, None, &buf);
                    len
                }
                Frame::Fatal { error, head } => {
                    sh.stats.frame_error(error).inc();
                    let code = match error {
                        FrameError::TooLarge => ReplyCode::MessageTooLarge,
                        FrameError::NoLength | FrameError::BadLength => ReplyCode::BadRequest,
                    };
                    match head {
                        Some(h) => hand(What::Refuse { code, close: true }, h, None, &buf),
                        None => {
                            let _ = tx.try_send(Out::Close);
                        }
                    }
                    return true;
                }
            };
            buf.drain(..used);
        }
    }
}

/// To the stream worker the Call-ID picks (worker 0 without one); a full
/// queue drops the message (counted) rather than stalling the connection
/// layer.
pub(super) fn hand_off(sh: &Shared, m: StreamIn) {
    let n = sh.workers.len() as u32;
    let w = match m.call_id.and_then(|(a, b)| m.bytes.get(a..b)) {
        Some(cid) => worker_for_hash(call_id_hash(cid), n) as usize,
        None => 0,
    };
    let Some(q) = sh.workers.get(w) else { return };
    match q.try_send(m) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => sh.stats.queue_full.inc(),
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Out>) {
    while let Some(o) = rx.recv().await {
        match o {
            Out::Bytes(b) => {
                if w.write_all(&b).await.is_err() {
                    return;
                }
            }
            Out::Close => break,
        }
    }
    let _ = w.shutdown().await;
}
