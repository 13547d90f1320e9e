//! The client of mpssd's control socket (feature `mpssd`):
//! `DIR/run/mpssd/control.sock`, the protocol of [`mpssd_proto`].
//!
//! Blocking, one request at a time; [`Client::subscribe`] turns the
//! connection into an event stream.

use std::io::{self, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use mpssd_proto::{
    CardStatus, ClientFrame, DaemonStatus, ErrorBody, ErrorCode, Event, EventKind, ReloadResult, Request,
    Response, ServerBody, ServerFrame, SupervisorState,
};
use mpssd_proto::{DecodeError, FrameError, LineDecoder};

use crate::root::MicRoot;

/// Everything that can go wrong talking to mpssd.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("cannot connect to mpssd at {}: {source} (is mpssd running for this root?)", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("talking to mpssd at {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mpssd closed the connection")]
    Closed,
    #[error("mpssd sent a frame that does not decode")]
    Decode(#[source] DecodeError),
    #[error("mpssd sent an oversized frame")]
    Frame(#[source] FrameError),
    /// mpssd refused the request.
    #[error("mpssd refused the request: {0}")]
    Refused(ErrorBody),
    #[error("mpssd answered {got} to a {asked} request")]
    Unexpected { asked: &'static str, got: String },
}

impl ClientError {
    /// The protocol error code, if mpssd refused the request.
    #[must_use]
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Refused(b) => Some(b.code),
            _ => None,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A connection to mpssd.
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    stream: UnixStream,
    decoder: LineDecoder,
    next_id: u64,
}

impl MicRoot {
    /// `<root>/run/mpssd/control.sock`.
    #[must_use]
    pub fn mpssd_socket(&self) -> PathBuf {
        self.join(mpssd_proto::SOCKET_PATH)
    }
}

impl Client {
    /// Connects to the mpssd serving `root`.
    pub fn connect(root: &MicRoot) -> Result<Self> {
        Self::connect_path(&root.mpssd_socket())
    }

    /// Connects to the control socket at `path`.
    pub fn connect_path(path: &Path) -> Result<Self> {
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            path: path.to_owned(),
            stream,
            decoder: LineDecoder::default(),
            next_id: 1,
        })
    }

    /// Bounds every read and write (`None`: block).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.stream
            .set_read_timeout(timeout)
            .and_then(|()| self.stream.set_write_timeout(timeout))
            .map_err(|e| self.io(e))
    }

    fn io(&self, source: io::Error) -> ClientError {
        ClientError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Sends one request; returns its id.
    pub fn send(&mut self, request: Request) -> Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let line = mpssd_proto::encode(&ClientFrame::new(Some(id), request));
        self.stream.write_all(&line).map_err(|e| self.io(e))?;
        Ok(id)
    }

    /// The next frame mpssd sends (an answer or an event).
    pub fn next_frame(&mut self) -> Result<ServerFrame> {
        loop {
            if let Some(line) = self.decoder.next_frame().map_err(ClientError::Frame)? {
                return mpssd_proto::decode_server(&line).map_err(ClientError::Decode);
            }
            let mut buf = [0u8; 8192];
            let want = buf.len().min(self.decoder.room().max(1));
            let n = match self.stream.read(&mut buf[..want]) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io(e)),
            };
            self.decoder.push(&buf[..n]);
        }
    }

    /// Sends `request` and waits for its answer (events arriving before it
    /// are skipped).
    pub fn request(&mut self, request: Request) -> Result<Response> {
        let id = self.send(request)?;
        loop {
            let frame = self.next_frame()?;
            match frame.body {
                // An answer without an id is the daemon refusing the
                // connection itself (too many clients, shutting down).
                ServerBody::Error(e) if frame.id.is_none() || frame.id == Some(id) => {
                    return Err(ClientError::Refused(e));
                }
                ServerBody::Ok(r) if frame.id == Some(id) => return Ok(r),
                _ => {}
            }
        }
    }

    /// The daemon and every card.
    pub fn status(&mut self) -> Result<DaemonStatus> {
        match self.request(Request::Status)? {
            Response::Status(s) => Ok(s),
            other => Err(unexpected("status", &other)),
        }
    }

    /// One card.
    pub fn card_status(&mut self, card: u32) -> Result<CardStatus> {
        match self.request(Request::CardStatus { card })? {
            Response::Card(s) => Ok(s),
            other => Err(unexpected("card_status", &other)),
        }
    }

    /// Asks mpssd to re-read its configuration file.
    pub fn reload_config(&mut self) -> Result<ReloadResult> {
        match self.request(Request::ReloadConfig)? {
            Response::Reloaded(r) => Ok(r),
            other => Err(unexpected("reload_config", &other)),
        }
    }

    /// Turns the connection into an event stream.
    pub fn subscribe(mut self) -> Result<Events> {
        match self.request(Request::Subscribe)? {
            Response::Subscribed => Ok(Events { client: self }),
            other => Err(unexpected("subscribe", &other)),
        }
    }
}

fn unexpected(asked: &'static str, got: &Response) -> ClientError {
    let got = match got {
        Response::Status(_) => "status",
        Response::Card(_) => "card",
        Response::Subscribed => "subscribed",
        Response::Reloaded(_) => "reloaded",
    };
    ClientError::Unexpected {
        asked,
        got: got.to_owned(),
    }
}

/// The events of a subscribed connection.
#[derive(Debug)]
pub struct Events {
    client: Client,
}

impl Events {
    /// Bounds the wait for the next event (`None`: block).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.client.set_timeout(timeout)
    }

    /// The next event.
    pub fn next_event(&mut self) -> Result<Event> {
        loop {
            let frame = self.client.next_frame()?;
            match frame.body {
                ServerBody::Event(e) => return Ok(e),
                ServerBody::Error(e) => return Err(ClientError::Refused(e)),
                ServerBody::Ok(_) => {}
            }
        }
    }
}

impl Iterator for Events {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_event() {
            Err(ClientError::Closed) => None,
            r => Some(r),
        }
    }
}
