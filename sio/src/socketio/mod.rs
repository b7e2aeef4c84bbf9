//! Socket.IO v5 over Engine.IO, sans IO: the packet codec and the reassembly of binary
//! packets with their attachments.

pub mod assemble;
pub mod packet;
