//! Nothing lives here: the programs are in `main.rs`. The library target lets
//! `rst-user`'s build script depend on this crate so cargo rebuilds the object
//! when it changes.
#![no_std]
