/** The pull side of Corral's image service: registry client, auth, endpoints, platforms, pull. */
export * from './errors.js';
export * from './media-types.js';
export * from './platform.js';
export * from './endpoints.js';
export * from './auth.js';
export { RegistryClient, type RegistryClientOptions, type ResolvedImage, type FetchBlobOptions } from './client.js';
export { pullImageContent, type PullOptions, type PullProgress, type PulledImage } from './pull.js';
