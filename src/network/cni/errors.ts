/**
 * Errors raised by Corral's CNI layer. Every message names the network, the plugin
 * and the verb so that it can be shown to a cluster operator as is.
 */

/** Well-known CNI error codes (SPEC "Error" section). */
export const CNI_ERROR_CODES: Readonly<Record<number, string>> = {
  1: 'incompatible CNI version',
  2: 'unsupported field in network configuration',
  3: 'container unknown or does not exist',
  4: 'invalid necessary environment variables',
  5: 'I/O failure',
  6: 'failed to decode content',
  7: 'invalid network config',
  11: 'try again later',
  50: 'plugin not available',
  51: 'plugin not available, existing containers may have limited connectivity',
};

export type CniVerb = 'ADD' | 'DEL' | 'CHECK' | 'STATUS' | 'GC' | 'VERSION';

/** Base class: a configuration, validation or cache problem in the CNI layer. */
export class CniError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CniError';
  }
}

export interface CniPluginErrorInit {
  network: string;
  pluginType: string;
  verb: CniVerb;
  /** The plugin's CNI error code; undefined when it gave none (crash, non-JSON output, exec failure). */
  code?: number;
  msg: string;
  details?: string;
  /** The plugin's stderr, kept for logs. */
  stderr?: string;
  /** True when the plugin ran and reported the failure itself (false: not found, exec failure, timeout). */
  ran?: boolean;
}

/** A plugin invocation failed: non-zero exit, unusable output, or the plugin could not be run at all. */
export class CniPluginError extends CniError {
  readonly network: string;
  readonly pluginType: string;
  readonly verb: CniVerb;
  readonly code: number | undefined;
  readonly msg: string;
  readonly details: string;
  readonly stderr: string;
  readonly ran: boolean;

  constructor(init: CniPluginErrorInit) {
    const codePart = init.code !== undefined ? ` (code ${init.code})` : '';
    const detailPart = init.details ? `: ${init.details}` : '';
    super(`CNI network "${init.network}" plugin "${init.pluginType}" ${init.verb} failed${codePart}: ${init.msg}${detailPart}`);
    this.name = 'CniPluginError';
    this.network = init.network;
    this.pluginType = init.pluginType;
    this.verb = init.verb;
    this.code = init.code;
    this.msg = init.msg;
    this.details = init.details ?? '';
    this.stderr = init.stderr ?? '';
    this.ran = init.ran ?? false;
  }
}

/** Several attachments failed; `errors` holds each one (usually CniPluginErrors). */
export class CniMultiError extends CniError {
  constructor(readonly what: string, readonly errors: Error[]) {
    super(`${what}: ${errors.length} error(s): ${errors.map((e) => e.message).join('; ')}`);
    this.name = 'CniMultiError';
  }
}

/** One error as is, several as a CniMultiError. */
export function combineErrors(what: string, errors: Error[]): Error {
  if (errors.length === 1) return errors[0]!;
  return new CniMultiError(what, errors);
}
