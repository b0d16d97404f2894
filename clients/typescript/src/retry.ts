// The client's one retry layer (gRFC A6, AIP-194), the same rule as the Python SDK's clients/client.py:
// a call is committed once its first message arrives; before that, Unavailable and ResourceExhausted
// are retried with exponential backoff (100 ms doubling to 2 s, plus up to 100 ms of jitter, and at
// least the server's retry pushback), at most `maxRetries` times and never past the call's deadline,
// unless the router says it already retried (a negative grpc-retry-pushback-ms: `error.retryable` is
// false), so attempts never multiply across layers. Nothing else is retried.
import { setTimeout as sleep } from "node:timers/promises";
import { status as Status } from "@grpc/grpc-js";
import { Cancelled, QarrError } from "./errors";

export const BACKOFF = { initialMs: 100, maxMs: 2000, jitterMs: 100 } as const;

/**
 * How long to wait before trying again after `failedAttempts` attempts ended in `error`, or null
 * to give up: a pure function of the error, the count, the policy and the time left (ms, null = no deadline).
 */
export function retryDelayMs(
  error: unknown,
  failedAttempts: number,
  maxRetries: number,
  msLeft: number | null,
  random: () => number = Math.random,
): number | null {
  if (!(error instanceof QarrError) || !error.retryable) return null;
  if (failedAttempts > maxRetries) return null;
  const backoff = Math.min(BACKOFF.maxMs, BACKOFF.initialMs * 2 ** (failedAttempts - 1) + random() * BACKOFF.jitterMs);
  const wait = Math.max(backoff, error.retryAfterMs ?? 0);
  if (msLeft !== null && wait >= msLeft) return null;
  return wait;
}

/** Run `attempt` until it succeeds or `retryDelayMs` gives up; an abort during a wait is Cancelled. */
export async function retrying<T>(
  attempt: () => Promise<T>,
  maxRetries: number,
  deadlineAt: number | null,
  signal: AbortSignal | undefined,
): Promise<T> {
  for (let failed = 1; ; failed++) {
    try {
      return await attempt();
    } catch (error) {
      const wait = retryDelayMs(error, failed, maxRetries, deadlineAt === null ? null : deadlineAt - Date.now());
      if (wait === null) throw error;
      try {
        await sleep(wait, undefined, { signal });
      } catch {
        throw aborted(signal);
      }
    }
  }
}

/** The Cancelled error for a call whose AbortSignal fired. */
export function aborted(signal: AbortSignal | undefined): QarrError {
  return new Cancelled("the call was aborted by its AbortSignal", { code: Status.CANCELLED, cause: signal?.reason });
}
