// Registers a node, beats, matches a job to it and releases the lease, over gRPC, against the
// server at LIVESTATE_TARGET (tests/test_typescript.py starts one and runs this).
import assert from "node:assert/strict";
import { test } from "node:test";

import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { HeartbeatService } from "../src/gen/livestate/v1/heartbeat_service_pb.js";
import { MatchService } from "../src/gen/livestate/v1/match_service_pb.js";
import { NodeSpecSchema, NodeState } from "../src/gen/livestate/v1/node_pb.js";
import { NodeService } from "../src/gen/livestate/v1/node_service_pb.js";
import { Liveness } from "../src/gen/livestate/v1/node_pb.js";

const target = process.env.LIVESTATE_TARGET ?? "http://127.0.0.1:50051";
const transport = createGrpcTransport({ baseUrl: target });

test("register, beat, match and release from TypeScript", async () => {
  const heartbeat = createClient(HeartbeatService, transport);
  const match = createClient(MatchService, transport);
  const nodes = createClient(NodeService, transport);
  const node = create(NodeSpecSchema, {
    nodeId: "ts-gpu-1",
    env: "test",
    region: "eu-west",
    models: ["llama-3-8b"],
    vramTotalMb: 24000n,
  });

  await heartbeat.register({ node, bootId: "ts-boot-1" }, { timeoutMs: 5000 });
  const beat = await heartbeat.beat(
    { nodeId: "ts-gpu-1", bootId: "ts-boot-1", seq: 1n, state: NodeState.IDLE },
    { timeoutMs: 5000 },
  );
  assert.equal(beat.resyncRequired, false);
  const got = await nodes.getNode({ nodeId: "ts-gpu-1" }, { timeoutMs: 5000 });
  assert.equal(got.node?.liveness, Liveness.ONLINE);

  const matched = await match.match({ jobId: "ts-job-1", env: "test", model: "llama-3-8b" }, { timeoutMs: 5000 });
  assert.equal(matched.lease?.nodeId, "ts-gpu-1");
  assert.ok((matched.lease?.fencingToken ?? 0n) > 0n);
  await match.release(
    { leaseId: matched.lease!.leaseId, fencingToken: matched.lease!.fencingToken },
    { timeoutMs: 5000 },
  );

  // A bad request is a clear status, named field and all.
  await assert.rejects(
    match.match({ jobId: "", env: "test", model: "llama-3-8b" }, { timeoutMs: 5000 }),
    (err: Error & { code?: number; rawMessage?: string }) => err.code === 3 && /job_id/.test(err.rawMessage ?? ""),
  );
});
