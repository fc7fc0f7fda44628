/**
 * What encryption at rest costs per value: SodiumCodec seal + open of a 1 KiB value, with the key
 * already cached (the steady state of the queue), through a plain in-memory key provider and
 * through MoleculerKeyProvider in front of an in-process keys service.
 * Run: npx tsx bench/codec.bench.ts [iterations]
 */
import { randomBytes, randomUUID } from "node:crypto";
import { ServiceBroker } from "moleculer";
import type { SealContext } from "../lib/codec";
import { MoleculerKeyProvider, type KeyProvider } from "../lib/crypto/key-provider";
import { SodiumCodec } from "../lib/crypto/sodium-codec";

const iterations = Number(process.argv[2] ?? 20_000);
const warmup = Math.min(5_000, iterations);
const VALUE_BYTES = 1024;

interface Figures {
  p50: number;
  p99: number;
  mean: number;
}

async function measure(label: string, run: () => Promise<void>): Promise<Figures> {
  for (let i = 0; i < warmup; i++) await run();
  const samples = new Float64Array(iterations);
  const started = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) {
    const t0 = process.hrtime.bigint();
    await run();
    samples[i] = Number(process.hrtime.bigint() - t0) / 1000;
  }
  const totalUs = Number(process.hrtime.bigint() - started) / 1000;
  samples.sort();
  const figures = {
    p50: samples[Math.floor(iterations * 0.5)]!,
    p99: samples[Math.floor(iterations * 0.99)]!,
    mean: totalUs / iterations,
  };
  console.log(
    `${label.padEnd(44)} p50 ${figures.p50.toFixed(1).padStart(6)} µs   p99 ${figures.p99.toFixed(1).padStart(6)} µs` +
      `   mean ${figures.mean.toFixed(1).padStart(6)} µs   ${Math.round(1e6 / figures.mean).toLocaleString("en")} ops/s`,
  );
  return figures;
}

async function main(): Promise<void> {
  console.log(
    `SodiumCodec, ${VALUE_BYTES}-byte value, ${iterations} iterations after ${warmup} warm-up (Node ${process.version})`,
  );
  const value = randomBytes(VALUE_BYTES);
  const at: SealContext = { ownerId: "bench-owner", queue: randomUUID(), taskId: randomUUID(), field: "value" };

  const key = { id: "k1", key: randomBytes(32) };
  const fixed: KeyProvider = { current: async () => key, byId: async () => key };
  const direct = new SodiumCodec(fixed);
  const sealed = await direct.seal(at, value);
  await measure("seal (key in memory)", async () => {
    await direct.seal(at, value);
  });
  await measure("open (key in memory)", async () => {
    await direct.open(at, sealed);
  });
  await measure("seal + open (key in memory)", async () => {
    await direct.open(at, await direct.seal(at, value));
  });

  const broker = new ServiceBroker({ logger: false });
  broker.createService({
    name: "keys",
    actions: { getOek: () => ({ id: "k1", key: key.key.toString("base64") }) },
  });
  await broker.start();
  try {
    const viaService = new SodiumCodec(new MoleculerKeyProvider({ broker, service: "worker.queue" }));
    await measure("seal + open (MoleculerKeyProvider, cached)", async () => {
      await viaService.open(at, await viaService.seal(at, value));
    });
  } finally {
    await broker.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
