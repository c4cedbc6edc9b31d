//! meridian-operator: turns Region and RegionLink objects into running regions, in a
//! cluster or, in local mode, as processes on this machine.

pub mod controller;
pub mod local;
pub mod mesh;
pub mod node_command;
