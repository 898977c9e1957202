//! Verdant's SMTP receiver: ESMTP server sessions that put accepted mail
//! into a [`verdant_queue::Queue`].
//!
//! - [`session`] is the protocol, sans I/O: bytes in, replies and events
//!   out. Everything RFC 5321 and the smuggling fixes demand of a server is
//!   enforced there, and tested there byte by byte.
//! - [`data`] scans message content (end of data, dot-unstuffing, bare
//!   CR/LF, line and size caps) with `memchr`.
//! - [`server`] is the thin monoio I/O loop around a session: accept, read
//!   with timeouts, write replies, hand messages to the queue.
//!
//! The invariant the receiver keeps: a client gets `250` for its message
//! only after the queue resolved `enqueue` (the message is durable).
//!
//! ```
//! use std::rc::Rc;
//! use verdant_receiver::{Event, Session, SessionConfig};
//! let cfg = Rc::new(SessionConfig {
//!     hostname: "mx.example".into(),
//!     max_message_size: 1 << 20,
//!     max_recipients: 100,
//!     max_errors: 10,
//!     client_networks: vec!["127.0.0.0/8".parse().unwrap()],
//! });
//! let mut s = Session::new(cfg, "127.0.0.1".parse().unwrap());
//! let input = b"EHLO client\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n";
//! assert_eq!(s.feed(input), (input.len(), Event::NeedMore));
//! let out = String::from_utf8(std::mem::take(s.output())).unwrap();
//! assert!(out.ends_with("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"));
//! ```
#![warn(missing_docs)]

pub mod data;
pub mod limiter;
pub mod policy;
pub mod server;
pub mod session;

pub use limiter::ConnLimiter;
pub use policy::SessionConfig;
pub use server::{Receiver, bind, serve};
pub use session::{Event, Session};
