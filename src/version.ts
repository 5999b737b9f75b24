/** Corral's version and the CRI API version it serves. */
export const CORRAL_VERSION = '0.1.0';
export const RUNTIME_NAME = 'corral';
export const CRI_API_VERSION = 'v1';
