//! Handing a client's connection from the gateway to an API worker.
//!
//! A WebSocket lives for hours, and relayed through the gateway every frame is received
//! and sent twice (client → gateway → worker and back) while the gateway keeps a task, two
//! sockets and their registrations per client. Under `btp up` the workers are children of
//! the gateway on the same machine, so once the gateway has read a WebSocket upgrade and
//! chosen its worker it can give the worker the client's socket itself: the worker
//! answers the upgrade and owns the connection from then on, and the gateway keeps
//! nothing. The failure the product must make impossible (a proxy whose timeouts disagree
//! with the heartbeat) cannot happen on a connection with no proxy left in it.
//!
//! The channel is one `SOCK_SEQPACKET` Unix socket pair per worker slot, made by the
//! supervisor: the gateway keeps the [`Sender`]; the other end is lent to every process
//! of the slot (`BTP_HANDOFF_FD`), as the slot's listening socket is, so a worker and its
//! replacement read one queue and a connection handed over while one replaces the other
//! waits in it. One message is one connection: the descriptor (`SCM_RIGHTS`), the request
//! head as the worker must read it (with the gateway's forwarding headers), and the
//! header lines the gateway adds to every response (security headers, request id).
//!
//! Sending never waits: a full queue means the worker is not keeping up, and the gateway
//! relays that connection as it would without a channel ([`Sender::send`]).

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// The environment variable naming a worker's end of its slot's channel.
pub const FD_ENV: &str = "BTP_HANDOFF_FD";

/// The first bytes of every message: the format's name and version.
const MAGIC: &[u8; 4] = b"BTH1";

/// The largest message: the largest head the gateway forwards (`btp_h1::limits`, the
/// client's head and the forwarding headers), and the response header lines.
pub const MAX_MESSAGE: usize =
    btp_h1::limits::MAX_HEAD_BYTES + btp_h1::limits::FORWARDING_BYTES + 4 * 1024;

/// A new channel: the gateway's [`Sender`], and the end to lend to the slot's workers
/// (close-on-exec: the supervisor clears that for each child it starts).
pub fn channel() -> io::Result<(Sender, OwnedFd)> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )?;
    Ok((Sender { fd: ours }, theirs))
}

/// The gateway's end of a slot's channel.
#[derive(Debug)]
pub struct Sender {
    fd: OwnedFd,
}

impl Sender {
    /// Queue `conn` for the worker with its request `head` and the `response_headers`
    /// (`Name: value\r\n` lines) the worker adds to its answer. Never waits: a full queue
    /// is [`io::ErrorKind::WouldBlock`]. On any error nothing was sent and `conn` is still
    /// the caller's alone; on success the worker holds its own descriptor of it, and the
    /// caller must close its copy without shutting the connection down.
    pub fn send(
        &self,
        conn: BorrowedFd<'_>,
        head: &[u8],
        response_headers: &[u8],
    ) -> io::Result<()> {
        let total = 8 + head.len() + response_headers.len();
        let head_len = u32::try_from(head.len())
            .ok()
            .filter(|_| total <= MAX_MESSAGE)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "handoff too large"))?;
        let len = head_len.to_be_bytes();
        let iov = [
            IoSlice::new(MAGIC),
            IoSlice::new(&len),
            IoSlice::new(head),
            IoSlice::new(response_headers),
        ];
        let fds = [conn.as_raw_fd()];
        let cmsgs = [ControlMessage::ScmRights(&fds)];
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        let sent = sendmsg::<()>(self.fd.as_raw_fd(), &iov, &cmsgs, flags, None)?;
        // A seqpacket message is queued whole or not at all.
        debug_assert_eq!(sent, total);
        Ok(())
    }
}

/// A connection handed over by the gateway.
#[derive(Debug)]
pub struct Handoff {
    /// The client's socket (blocking mode as the gateway left it: non-blocking).
    pub stream: std::net::TcpStream,
    /// The request head, `\r\n\r\n` included; nothing after it was read from `stream`.
    pub head: Vec<u8>,
    /// Header lines (`Name: value\r\n`) to add to the answer.
    pub response_headers: Vec<u8>,
}

/// A worker's end of its slot's channel.
#[derive(Debug)]
pub struct Receiver {
    fd: AsyncFd<OwnedFd>,
}

impl Receiver {
    /// Take the inherited end `fd` (must be called inside a tokio runtime).
    pub fn new(fd: OwnedFd) -> io::Result<Receiver> {
        // Non-blocking already (made so by `channel`); set again in case a parent did not.
        // SAFETY: fcntl on a descriptor we own.
        let flags = unsafe { nix::libc::fcntl(fd.as_raw_fd(), nix::libc::F_GETFL) };
        if flags == -1
            || unsafe {
                nix::libc::fcntl(
                    fd.as_raw_fd(),
                    nix::libc::F_SETFL,
                    flags | nix::libc::O_NONBLOCK,
                )
            } == -1
        {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is owned by the `AsyncFd` for its whole life and never replaced.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Receiver { fd })
    }

    /// The next connection; `Ok(None)` once the gateway's end is closed. A message that is
    /// not a well-formed handoff is an [`io::ErrorKind::InvalidData`] error, with any
    /// descriptor it carried closed; the channel stays usable. Cancel-safe: a message is
    /// taken off the queue only by the call that returns it.
    pub async fn recv(&self) -> io::Result<Option<Handoff>> {
        loop {
            let mut ready = self.fd.readable().await?;
            match ready.try_io(|fd| receive(fd.get_ref().as_raw_fd())) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

/// One `recvmsg`, decoded.
fn receive(fd: RawFd) -> io::Result<Option<Handoff>> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    // Room for more than one descriptor, so that a message carrying several is seen
    // (and all of them closed) instead of truncated.
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let (bytes, flags, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            fd,
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                // SAFETY: the kernel just installed these descriptors for us; nothing
                // else refers to them.
                fds.extend(
                    received
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        (msg.bytes, msg.flags, fds)
    };
    if bytes == 0 && fds.is_empty() {
        return Ok(None);
    }
    let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("handoff: {why}"));
    if flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) {
        return Err(invalid("message truncated"));
    }
    let mut fds = fds.into_iter();
    let (Some(conn), None) = (fds.next(), fds.next()) else {
        return Err(invalid("not exactly one descriptor"));
    };
    let (head, response_headers) =
        split(&buf[..bytes]).ok_or_else(|| invalid("malformed message"))?;
    let stream = std::net::TcpStream::from(conn);
    // A descriptor that is not a connected socket is refused here, not at first use.
    stream
        .peer_addr()
        .map_err(|_| invalid("not a connected socket"))?;
    Ok(Some(Handoff {
        stream,
        head: head.to_vec(),
        response_headers: response_headers.to_vec(),
    }))
}

/// The head and the response header lines of a message (pure).
fn split(message: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = message.strip_prefix(MAGIC)?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    (len <= rest.len()).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    fn connected() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        (client, server)
    }

    #[test]
    fn a_message_is_the_head_then_the_header_lines() {
        let mut message = b"BTH1\0\0\0\x03GET".to_vec();
        message.extend_from_slice(b"X-A: 1\r\n");
        assert_eq!(split(&message), Some((&b"GET"[..], &b"X-A: 1\r\n"[..])));
        assert_eq!(split(b"BTH1\0\0\0\x04GET"), None);
        assert_eq!(split(b"BTH2\0\0\0\x00"), None);
        assert_eq!(split(b"BTH1\0\0"), None);
    }

    #[tokio::test]
    async fn a_connection_handed_over_talks_to_the_receiver_and_survives_the_senders_close() {
        let (sender, theirs) = channel().expect("channel");
        let receiver = Receiver::new(theirs).expect("receiver");
        let (mut client, server) = connected();
        sender
            .send(
                server.as_fd(),
                b"GET / HTTP/1.1\r\n\r\n",
                b"X-Request-Id: r1\r\n",
            )
            .expect("send");
        // The gateway's copy goes away; the connection must not.
        drop(server);
        let mut handoff = receiver.recv().await.expect("recv").expect("a handoff");
        assert_eq!(handoff.head, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(handoff.response_headers, b"X-Request-Id: r1\r\n");
        handoff.stream.set_nonblocking(false).expect("blocking");
        handoff.stream.write_all(b"hello").expect("write");
        let mut got = [0u8; 5];
        client.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"hello");
        client.write_all(b"back").expect("write back");
        let mut back = [0u8; 4];
        handoff.stream.read_exact(&mut back).expect("read back");
        assert_eq!(&back, b"back");
        drop(sender);
        assert!(receiver.recv().await.expect("recv after close").is_none());
    }

    #[tokio::test]
    async fn a_message_without_a_descriptor_or_with_two_is_refused_and_its_descriptors_closed() {
        let (sender, theirs) = channel().expect("channel");
        let receiver = Receiver::new(theirs).expect("receiver");
        let raw = sender.fd.as_raw_fd();
        let plain = [IoSlice::new(b"BTH1\0\0\0\0")];
        sendmsg::<()>(raw, &plain, &[], MsgFlags::empty(), None).expect("send plain");
        let err = receiver.recv().await.expect_err("no descriptor");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        let (mut client, server) = connected();
        let (_client2, server2) = connected();
        let fds = [server.as_raw_fd(), server2.as_raw_fd()];
        sendmsg::<()>(
            raw,
            &plain,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .expect("send two");
        drop((server, server2));
        let err = receiver.recv().await.expect_err("two descriptors");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // Every copy of the server side is closed: the client sees the end of the stream.
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).expect("eof");
        assert!(rest.is_empty());

        // The channel still works after both.
        let (_client3, server3) = connected();
        sender.send(server3.as_fd(), b"h", b"").expect("send");
        assert!(receiver.recv().await.expect("recv").is_some());
    }

    #[test]
    fn a_full_queue_says_would_block_and_leaves_the_connection_with_the_sender() {
        let (sender, _theirs) = channel().expect("channel");
        let (_client, server) = connected();
        let head = vec![b'x'; 4096];
        let mut queued = 0;
        let error = loop {
            match sender.send(server.as_fd(), &head, b"") {
                Ok(()) => queued += 1,
                Err(e) => break e,
            }
            assert!(queued < 100_000, "the queue never filled");
        };
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
        assert!(queued > 0);
        assert!(server.peer_addr().is_ok());
    }

    #[test]
    fn an_oversized_message_is_refused_before_sending() {
        let (sender, _theirs) = channel().expect("channel");
        let (_client, server) = connected();
        let head = vec![b'x'; MAX_MESSAGE];
        let error = sender
            .send(server.as_fd(), &head, b"")
            .expect_err("too large");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }
}
