/* chainlab.trace._engine, calls into Python: included by _engine.c, in its order (uses what the parts
 * before it define). */

/* A Python call failed: keep the first exception, stop feeding (feed() raises it). */
static void call_failed(Engine *e) {
    if (!e->error) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb && value)
            PyException_SetTraceback(value, tb);
        e->error = value ? value : Py_NewRef(Py_None);
        Py_XDECREF(type);
        Py_XDECREF(tb);
    } else {
        PyErr_Clear();
    }
}
