//! One real TLS handshake over loopback TCP between two configurations, for the tests of
//! `certs::tls` and of the certificates `shardctl pki` writes: both go through the same code
//! path a service uses.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use certs::rustls::pki_types::ServerName;
use certs::rustls::{self, ClientConfig, ClientConnection, ServerConfig, ServerConnection};
use certs::SpiffeId;

/// Long enough for a debug build on a loaded machine, short enough that a bug hangs no test.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The message the client sends once connected.
pub const PING: &[u8] = b"ping\n";

/// How the server side of one connection ended.
#[derive(Debug)]
pub enum ServerEnd {
    /// The handshake completed and the client's certificate named this id.
    Accepted(SpiffeId),
    /// rustls refused the handshake with this error.
    Refused(rustls::Error),
    /// Anything else (plain I/O, an id that would not parse).
    Failed(String),
}

/// Both sides of one connection.
#[derive(Debug)]
pub struct Outcome {
    /// What the server saw.
    pub server: ServerEnd,
    /// What the client read back (the server's greeting naming the client's id), or why not.
    pub client: Result<String, io::Error>,
    /// The server's SPIFFE id as the client saw it, when the client's handshake completed.
    pub server_id_seen_by_client: Option<SpiffeId>,
}

impl Outcome {
    /// The rustls error the server refused with, if it refused.
    pub fn server_refusal(&self) -> Option<&rustls::Error> {
        match &self.server {
            ServerEnd::Refused(e) => Some(e),
            _ => None,
        }
    }

    /// The rustls error underlying the client's failure, if any.
    pub fn client_tls_error(&self) -> Option<&rustls::Error> {
        self.client.as_ref().err().and_then(tls_error)
    }
}

/// Accepts one connection with `server`, connects to it with `client` addressing it as
/// `server_name`, has the client send [`PING`], and the server answer
/// `hello <client spiffe id>\n` and close.
pub fn handshake(server: ServerConfig, client: ClientConfig, server_name: &str) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let server = Arc::new(server);
    let server_thread = thread::spawn(move || serve_one(&listener, server));

    let mut server_id_seen_by_client = None;
    let client = (|| {
        let tcp = TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(IO_TIMEOUT))?;
        tcp.set_write_timeout(Some(IO_TIMEOUT))?;
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let conn = ClientConnection::new(Arc::new(client), name).map_err(io::Error::other)?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        // Writing drives the handshake first. In TLS 1.3 the client finishes its side before
        // the server has judged the client's certificate, so a refusal shows up on the read.
        stream.write_all(PING)?;
        stream.flush()?;
        server_id_seen_by_client = certs::tls::peer_spiffe_id(&stream.conn).ok();
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        Ok(reply)
    })();

    let server = server_thread.join().expect("server thread panicked");
    Outcome {
        server,
        client,
        server_id_seen_by_client,
    }
}

fn serve_one(listener: &TcpListener, config: Arc<ServerConfig>) -> ServerEnd {
    let (mut tcp, _) = match listener.accept() {
        Ok(accepted) => accepted,
        Err(e) => return ServerEnd::Failed(format!("accept: {e}")),
    };
    if let Err(e) = tcp
        .set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| tcp.set_write_timeout(Some(IO_TIMEOUT)))
    {
        return ServerEnd::Failed(format!("timeouts: {e}"));
    }
    let mut conn = match ServerConnection::new(config) {
        Ok(conn) => conn,
        Err(e) => return ServerEnd::Failed(format!("new connection: {e}")),
    };
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut tcp) {
            // Send the alert rustls queued, so the client learns why.
            let _ = conn.write_tls(&mut tcp);
            return match tls_error(&e) {
                Some(tls) => ServerEnd::Refused(tls.clone()),
                None => ServerEnd::Failed(format!("handshake I/O: {e}")),
            };
        }
    }
    let id = match certs::tls::peer_spiffe_id(&conn) {
        Ok(id) => id,
        Err(e) => return ServerEnd::Failed(format!("peer id: {e}")),
    };
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    let mut ping = [0u8; PING.len()];
    if let Err(e) = stream.read_exact(&mut ping) {
        return ServerEnd::Failed(format!("read ping: {e}"));
    }
    if ping != PING {
        return ServerEnd::Failed(format!("unexpected ping {ping:?}"));
    }
    let greeting = format!("hello {id}\n");
    let written = stream.write_all(greeting.as_bytes()).and_then(|()| {
        stream.conn.send_close_notify();
        stream.flush()
    });
    if let Err(e) = written {
        return ServerEnd::Failed(format!("write greeting: {e}"));
    }
    ServerEnd::Accepted(id)
}

/// The rustls error inside an I/O error from a rustls stream, if there is one.
pub fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}
