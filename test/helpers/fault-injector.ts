/**
 * Test-only preload (`node --import`), never loaded by Corral itself: lets a test inject
 * the kind of bug the daemon's process policy exists for into a real `corral serve`.
 * On SIGUSR2 it makes an unhandled rejection, or with CORRAL_TEST_FAULT=throw an
 * exception thrown from a callback.
 */
process.on('SIGUSR2', () => {
  if (process.env.CORRAL_TEST_FAULT === 'throw') {
    setImmediate(() => {
      throw new Error('corral-test: injected uncaught exception');
    });
  } else {
    void Promise.reject(new Error('corral-test: injected unhandled rejection'));
  }
});
