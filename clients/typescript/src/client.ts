// QarrClient: qarr.v1.RouterService on @grpc/grpc-js, the TypeScript twin of the Python SDK's AsyncClient.
//
// Retries (src/retry.ts): a Generate call is committed once its first message arrives; before that,
// Unavailable and ResourceExhausted are retried with backoff inside the call's deadline, unless the
// router says it already retried them. A stream that delivered a message is never replayed: a failure
// after that is thrown to the caller as it is.
import {
  type ChannelOptions,
  type ClientReadableStream,
  type ClientUnaryCall,
  credentials,
  Metadata,
  type ServiceError,
  status as Status,
} from "@grpc/grpc-js";
import { buildRequest, toChunk, toCompletion, toTier } from "./convert";
import { DeadlineExceeded, fromServiceError, isServiceError } from "./errors";
import { decodeHealthCheckResponse, encodeHealthCheckRequest, HEALTH_CHECK_PATH } from "./health";
import {
  type GenerateRequest,
  type GenerateResponse,
  type ListTiersResponse,
  RouterServiceClient,
} from "./gen/qarr/v1/router_service";
import { aborted, retrying } from "./retry";
import type { Chunk, Completion, GenerateInput, Tier } from "./types";

export const DEFAULT_TARGET = "127.0.0.1:50051";
/** The router address when none is passed. */
export const TARGET_ENV = "QARR_TARGET";
export const DEFAULT_TIMEOUT_MS = 120_000;
export const DEFAULT_MAX_RETRIES = 2;

const CHANNEL_OPTIONS: ChannelOptions = {
  // One retry layer: ours. gRPC's own transparent retries stay off.
  "grpc.enable_retries": 0,
  // Reconnect about as fast as we retry, so a retry after "connection refused" does not fail at
  // once on a channel still waiting out a longer reconnect backoff.
  "grpc.initial_reconnect_backoff_ms": 100,
  "grpc.max_reconnect_backoff_ms": 2000,
};

export interface ClientOptions {
  /** The router's HOST:PORT (default: $QARR_TARGET, else 127.0.0.1:50051). */
  target?: string;
  /** Default deadline of each call in ms, retries included (default 120 000; null for none). */
  timeoutMs?: number | null;
  /** Use TLS (with the system's roots unless `rootCertificates` is given). */
  tls?: boolean;
  /** PEM roots to trust; implies TLS. */
  rootCertificates?: Buffer;
  /**
   * PEM private key of `certificateChain`: the client certificate for a router that requires one (mutual
   * TLS, the router's `tls.client_ca`). The two go together; they imply TLS.
   */
  privateKey?: Buffer;
  /** PEM client certificate chain presented to the router (mutual TLS); goes with `privateKey`. */
  certificateChain?: Buffer;
  /** Sent as `authorization: Bearer <token>` on every call. */
  token?: string;
  /** Retries before the first message (default 2). */
  maxRetries?: number;
  /** Extra grpc-js channel options (override the client's own). */
  channelOptions?: ChannelOptions;
}

export interface CallOptions {
  /** This call's deadline in ms, retries included (default: the client's `timeoutMs`; null for none). */
  timeoutMs?: number | null;
  /** Aborting cancels the call (the router and the tier see the cancel); the call throws Cancelled. */
  signal?: AbortSignal;
}

/**
 * `const client = new QarrClient(); for await (const chunk of client.generate("Hi")) ...; client.close();`
 *
 * Every failed call throws a QarrError subclass (src/errors.ts).
 */
export class QarrClient {
  readonly target: string;
  readonly timeoutMs: number | null;
  readonly maxRetries: number;
  private readonly stub: RouterServiceClient;
  private readonly token: string | undefined;

  constructor(options: ClientOptions = {}) {
    const maxRetries = options.maxRetries ?? DEFAULT_MAX_RETRIES;
    if (!Number.isInteger(maxRetries) || maxRetries < 0) throw new RangeError("maxRetries must be an integer >= 0");
    this.target = options.target || process.env[TARGET_ENV] || DEFAULT_TARGET;
    this.timeoutMs = options.timeoutMs === undefined ? DEFAULT_TIMEOUT_MS : options.timeoutMs;
    this.maxRetries = maxRetries;
    if ((options.privateKey === undefined) !== (options.certificateChain === undefined)) {
      throw new TypeError("privateKey and certificateChain go together (a client certificate for mutual TLS)");
    }
    this.token = options.token;
    const tls = options.tls || options.rootCertificates || options.certificateChain;
    const creds = tls
      ? credentials.createSsl(options.rootCertificates ?? null, options.privateKey ?? null, options.certificateChain ?? null)
      : credentials.createInsecure();
    this.stub = new RouterServiceClient(this.target, creds, { ...CHANNEL_OPTIONS, ...options.channelOptions });
  }

  /** Close the channel; calls in flight are cancelled. */
  close(): void {
    this.stub.close();
  }

  /**
   * Stream chunks; the last one carries finishReason, usage and tier. `input` is a prompt (sent as
   * is) or a GenerateInput with exactly one of `prompt` and `messages` (else a TypeError at once).
   * Leaving the loop early (`break`) cancels the call.
   */
  generate(input: string | GenerateInput, options: CallOptions = {}): AsyncGenerator<Chunk, void, undefined> {
    return this.stream(buildRequest(typeof input === "string" ? { prompt: input } : input), options);
  }

  /** The whole answer at once (same arguments as `generate`). */
  async complete(input: string | GenerateInput, options: CallOptions = {}): Promise<Completion> {
    const chunks: Chunk[] = [];
    for await (const chunk of this.generate(input, options)) chunks.push(chunk);
    return toCompletion(chunks);
  }

  /** The router's tiers with health, breaker state, load and profile (retried like Generate). */
  async listTiers(options: CallOptions = {}): Promise<Tier[]> {
    const deadlineAt = this.deadlineAt(options.timeoutMs);
    const attempt = () =>
      this.unary<ListTiersResponse>(
        (callback) => this.stub.listTiers({}, this.metadata(), { deadline: remaining(deadlineAt) }, callback),
        options.signal,
      );
    const response = await retrying(attempt, this.maxRetries, deadlineAt, options.signal);
    return response.tiers.map(toTier);
  }

  /** grpc.health.v1 status of the router: "SERVING", "NOT_SERVING", ... (not retried). */
  async health(service = "", options: CallOptions = {}): Promise<string> {
    const deadlineAt = this.deadlineAt(options.timeoutMs);
    return this.unary<string>(
      (callback) =>
        this.stub.makeUnaryRequest(
          HEALTH_CHECK_PATH,
          encodeHealthCheckRequest,
          decodeHealthCheckResponse,
          service,
          this.metadata(),
          { deadline: remaining(deadlineAt) },
          callback,
        ),
      options.signal,
    );
  }

  private async *stream(request: GenerateRequest, options: CallOptions): AsyncGenerator<Chunk, void, undefined> {
    const { signal } = options;
    const deadlineAt = this.deadlineAt(options.timeoutMs);
    const { call, next, first } = await retrying(
      () => this.open(request, deadlineAt, signal),
      this.maxRetries,
      deadlineAt,
      signal,
    );
    // Committed: from here on nothing is retried.
    const onAbort = () => call.cancel();
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      for (let msg = first; msg !== null; msg = await next()) yield toChunk(msg);
    } catch (e) {
      throw mapError(e, signal);
    } finally {
      signal?.removeEventListener("abort", onAbort);
      call.cancel(); // no-op after the status arrived; frees the router and tier when the caller left early
    }
  }

  /** Start Generate and wait for its first message (null: the stream ended without one). */
  private async open(request: GenerateRequest, deadlineAt: number | null, signal: AbortSignal | undefined) {
    if (signal?.aborted) throw aborted(signal);
    const call = this.stub.generate(request, this.metadata(), { deadline: remaining(deadlineAt) });
    const next = reader(call);
    const onAbort = () => call.cancel();
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      return { call, next, first: await next() };
    } catch (e) {
      call.cancel();
      throw mapError(e, signal);
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  private unary<T>(
    start: (callback: (error: ServiceError | null, value?: T) => void) => ClientUnaryCall,
    signal?: AbortSignal,
  ): Promise<T> {
    if (signal?.aborted) return Promise.reject(aborted(signal));
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => call.cancel();
      const call = start((error, value) => {
        signal?.removeEventListener("abort", onAbort);
        if (error) reject(mapError(error, signal));
        else resolve(value as T);
      });
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  private metadata(): Metadata {
    const metadata = new Metadata();
    if (this.token) metadata.set("authorization", `Bearer ${this.token}`);
    return metadata;
  }

  private deadlineAt(timeoutMs: number | null | undefined): number | null {
    const timeout = timeoutMs === undefined ? this.timeoutMs : timeoutMs;
    return timeout === null ? null : Date.now() + timeout;
  }
}

/** The grpc-js deadline for an attempt; DeadlineExceeded when it already passed. */
function remaining(deadlineAt: number | null): number {
  if (deadlineAt === null) return Infinity;
  if (deadlineAt <= Date.now()) {
    throw new DeadlineExceeded("the deadline passed before the call could start", { code: Status.DEADLINE_EXCEEDED });
  }
  return deadlineAt;
}

function mapError(e: unknown, signal: AbortSignal | undefined): unknown {
  if (signal?.aborted && isServiceError(e) && e.code === Status.CANCELLED) return aborted(signal);
  return isServiceError(e) ? fromServiceError(e) : e;
}

/**
 * Read a server stream one message at a time: the next message, null at a clean end, or the call's
 * error once every message before it was read. Our 'error' listener stays attached for the call's
 * life, so a cancel after the caller stopped reading never surfaces as an unhandled 'error' event.
 */
function reader(call: ClientReadableStream<GenerateResponse>): () => Promise<GenerateResponse | null> {
  const buffered: GenerateResponse[] = [];
  let ended = false;
  let failure: ServiceError | null = null;
  let wake: (() => void) | null = null;
  const notify = () => {
    wake?.();
    wake = null;
  };
  call.on("data", (msg: GenerateResponse) => {
    buffered.push(msg);
    if (buffered.length >= 64) call.pause(); // resumed once the reader catches up
    notify();
  });
  call.on("end", () => {
    ended = true;
    notify();
  });
  call.on("error", (e: ServiceError) => {
    failure ??= e;
    notify();
  });
  return async () => {
    // Messages that arrived before a failure are read first; the failure surfaces after them.
    while (!buffered.length && !ended && (!failure || call.readableLength > 0)) {
      if (call.isPaused()) call.resume();
      await new Promise<void>((resolve) => (wake = resolve));
    }
    if (buffered.length) return buffered.shift()!;
    if (failure) throw failure;
    return null;
  };
}
