// ringattn: the installed library's one header (`#include <ringattn/ringattn.h>`,
// target ringattn::ringattn or pkg-config ringattn).
//
//   ringattn::RingAttention   the ring on one rank (runtime/ringattn.h)
//   ringattn::comm::World     the communicators of a world: local threads,
//                             cuda-local, UCX or NCCL processes (comm/world.h)
//   ringattn::comm::LocalWorld W ranks as threads of one process
//   ringattn::Mask, Layout    masks by global position, shardings
//   ringattn::Reference*      the float64 reference, to check results
//
// The headers keep the source tree's layout under include/ringattn/
// (runtime/, comm/, attention/) and include each other by that path, so
// the package puts both include/ and include/ringattn/ on the include path.
#pragma once

#include "ringattn/version.h"
#include "attention/reference.h"
#include "comm/local/local_comm.h"
#include "comm/world.h"
#include "runtime/ringattn.h"
