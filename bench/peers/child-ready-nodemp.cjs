// child_process.fork's child for the spawn comparison: it loads nodemp, as a
// spawned child must, then says it is ready.
import(require('node:path').join(__dirname, '..', '..', 'dist', 'index.js')).then(() => process.send('ready'));
